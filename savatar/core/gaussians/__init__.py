"""The avatar and its binding: the Gaussian containers, Gaussians bound to the triangles of a head
mesh (binding.deform), the Rig that poses a bound avatar in one call, spherical harmonics, which
Gaussians face the eye, and the anti-spike statistics."""
