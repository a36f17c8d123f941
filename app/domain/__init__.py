"""Plain types and pure rules: enums, limits, validation. No I/O."""
