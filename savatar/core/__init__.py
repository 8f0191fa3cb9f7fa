"""The maths and data of SpatialAvatar, one subpackage per pipeline stage (torch and numpy; no
viewer, OpenGL or GUI imports, see tests/test_layers.py):

- head: head models and linear blend skinning (HeadModel, FLAME, the open head);
- gaussians: the avatar's Gaussians, their binding to the head mesh, the Rig that poses them;
- render: render() and the rasterizers behind it, cameras;
- drive: signals that pose a head (face tracking, speech to mouth, motion files);
- io: files (avatar files, PLY, video, atomic writes);
- build: avatars from portraits (landmark fit, generator);
- refine: refinement and where its frames come from."""
