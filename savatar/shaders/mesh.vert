#version 330
// Shaded mesh: positions in world space, OpenCV camera (viewmat), clip from gl_projection().
uniform mat4 viewmat;
uniform mat4 proj;
in vec3 in_pos;
in vec3 in_normal;
in vec3 in_color;
out vec3 v_normal_cam;
out vec3 v_pos_cam;
out vec3 v_color;
void main() {
    vec4 p = viewmat * vec4(in_pos, 1.0);
    v_pos_cam = p.xyz;
    v_normal_cam = mat3(viewmat) * in_normal;
    v_color = in_color;
    gl_Position = proj * p;
}
