"""What every dataset shares: Splits, the validation split, channel statistics, batches on the device."""
