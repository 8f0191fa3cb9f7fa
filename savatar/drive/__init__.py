"""Live drive sources: webcam or video (face tracking), microphone and audio files (speech to
mouth). Each runs its own threads and hands the newest parameters to the caller."""
