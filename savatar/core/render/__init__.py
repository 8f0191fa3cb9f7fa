"""One public render() (render.api) with the backends behind it: the pure-PyTorch CPU rasterizer,
the reference, and gsplat's CUDA rasterizer; beside them the numpy projection the OpenGL splatter
uses, checked against that reference, and the cameras they all take."""
