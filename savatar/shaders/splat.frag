#version 330
// Front-to-back compositing: blending adds src * (1 - dst.a), so with premultiplied colour the
// accumulated rgb is sum(c a T) and the accumulated alpha is 1 - T.
// Per pixel as gsplat's CUDA rasterizer (docs/conventions.md): alpha capped at 0.999, contributions below
// 1/255 skipped; the quad is the opacity-aware support ellipse's rectangle (project_numpy).
uniform vec2 image_size;
flat in vec2 v_centre;
flat in vec3 v_conic;
flat in vec4 v_color;
flat in float v_depth;
layout(location = 0) out vec4 f_color;
layout(location = 1) out vec4 f_depth;

const float ALPHA_MIN = 1.0 / 255.0;
const float ALPHA_MAX = 0.999;
const float MAX_POWER = 0.5 * 3.33 * 3.33;  // 3.33 standard deviations, gsplat's largest extent

void main() {
    vec2 d = vec2(gl_FragCoord.x, image_size.y - gl_FragCoord.y) - v_centre;
    float power = 0.5 * (v_conic.x * d.x * d.x + v_conic.z * d.y * d.y) + v_conic.y * d.x * d.y;
    if (power > MAX_POWER) discard;
    float alpha = min(ALPHA_MAX, v_color.a * exp(-power));
    if (alpha < ALPHA_MIN) discard;
    f_color = vec4(v_color.rgb * alpha, alpha);
    f_depth = vec4(v_depth * alpha, 0.0, 0.0, alpha);  // dropped when no depth target is bound
}
