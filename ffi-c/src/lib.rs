//! C ABI for sansh: not yet built (see the C-binding issue). Nothing here is public API yet.
