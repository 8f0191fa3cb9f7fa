"""OpenGL drawing with moderngl: headless EGL contexts, the shaded mesh renderer and the
Gaussian splatter. Kept out of savatar.core, which holds no GL."""
