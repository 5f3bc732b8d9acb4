//! Network namespaces created and owned by fwharden (tests, replica probes).
