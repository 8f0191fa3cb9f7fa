"""Live drive sources: webcam or video (face tracking), microphone and audio files (speech to
mouth). Each runs its own threads and hands the newest parameters to the caller.

They stay outside savatar.core, beside the viewer that is their only user: they own devices
(camera, microphone) and threads, not maths. The maths they run (tracking, speech to mouth) is
savatar.core.drive, which knows nothing of them."""
