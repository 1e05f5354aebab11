"""Sample images bundled for `anrc demo` (kodim23 from the Kodak suite, released for unrestricted use)."""
