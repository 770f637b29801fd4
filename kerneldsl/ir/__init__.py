"""The tensor/expression IR and the loop IR."""
