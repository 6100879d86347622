"""Loading weights from other projects and from files on disk."""
