//! Python bindings for sansh: not yet built (see the Python-binding issue).
