"""circuitlab: the runtime of a hands-on activation-patching course."""
