"""Small helpers every layer may use: reading hostile files, the console cnnspec prints with."""
