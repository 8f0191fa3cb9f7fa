"""Avatars from portraits: the landmark fit and colour lifting of build.build (no learned weights),
and the feed-forward generator with its training."""
