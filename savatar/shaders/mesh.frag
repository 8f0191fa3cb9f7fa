#version 330
// Two lights fixed to the camera (key from upper left, soft fill) plus ambient and a little
// specular: enough shading cues for a face detector to read the geometry.
uniform float opacity;
in vec3 v_normal_cam;
in vec3 v_pos_cam;
in vec3 v_color;
out vec4 f_color;
void main() {
    vec3 n = normalize(v_normal_cam);
    vec3 to_eye = normalize(-v_pos_cam);
    if (dot(n, to_eye) < 0.0) n = -n;  // inner surfaces (mouth, sockets) lit from the viewer
    vec3 key = normalize(vec3(-0.4, -0.5, -1.0));
    vec3 fill = normalize(vec3(0.6, 0.1, -1.0));
    float diffuse = 0.65 * max(dot(n, key), 0.0) + 0.25 * max(dot(n, fill), 0.0);
    vec3 h = normalize(key + to_eye);
    float spec = 0.08 * pow(max(dot(n, h), 0.0), 24.0);
    vec3 c = v_color * (0.28 + diffuse) + vec3(spec);
    f_color = vec4(c * opacity, opacity);
}
