//! The registry role: registered models, versions, aliases and artifacts.
