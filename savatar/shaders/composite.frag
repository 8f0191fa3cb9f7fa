#version 330
// Puts the accumulated splats over the background: rgb + (1 - alpha) * background.
uniform sampler2D accum;
uniform vec3 background;
in vec2 v_uv;
out vec4 f_color;
void main() {
    vec4 a = texture(accum, v_uv);
    f_color = vec4(a.rgb + (1.0 - a.a) * background, 1.0);
}
