//! The gateway role: the external entry point of mlserve.
