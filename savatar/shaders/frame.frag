#version 330
// A rasterizer's image (rows stored top first) stretched over the whole target, opaque.
uniform sampler2D image;
in vec2 v_uv;
out vec4 f_color;
void main() {
    f_color = vec4(texture(image, vec2(v_uv.x, 1.0 - v_uv.y)).rgb, 1.0);
}
