//! The directory backend: a Windows root as a folder on the host.
