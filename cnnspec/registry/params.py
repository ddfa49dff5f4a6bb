"""Parameter value types shared by plugins: strict ints, [h, w] pairs, probabilities."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, Strict

Int = Annotated[int, Strict()]  # YAML ints only: no bools, no 2.0
PosInt = Annotated[int, Strict(), Field(ge=1)]
NonNegInt = Annotated[int, Strict(), Field(ge=0)]
PosPair = Annotated[tuple[PosInt, PosInt], Field(description="[height, width]")]
NonNegPair = Annotated[tuple[NonNegInt, NonNegInt], Field(description="[height, width]")]
Size2 = PosInt | PosPair
Pad2 = NonNegInt | NonNegPair
ConvPadding = NonNegInt | NonNegPair | Literal["same", "valid"]
Probability = Annotated[float, Field(ge=0.0, le=1.0)]
PosFloat = Annotated[float, Field(gt=0.0)]
NonNegFloat = Annotated[float, Field(ge=0.0)]
