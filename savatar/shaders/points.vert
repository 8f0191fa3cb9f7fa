#version 330
// Gaussian centres overlay.
uniform mat4 viewmat;
uniform mat4 proj;
in vec3 in_pos;
void main() {
    gl_Position = proj * (viewmat * vec4(in_pos, 1.0));
}
