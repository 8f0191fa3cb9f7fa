#version 330
// One instanced quad per Gaussian. The EWA projection is done on the CPU
// (savatar.core.project_numpy, the same formulas as the reference rasterizer): llvmpipe runs
// vertex shaders on one core, so this shader only places the quad corners.
uniform vec2 image_size;   // W, H in pixels
uniform vec2 clip_range;   // GL near and far planes, as in gl_projection()

in vec2 corner;            // (-1, -1) .. (1, 1)
in vec2 i_centre;          // pixels, OpenCV convention (y down)
in vec3 i_conic;
in vec4 i_color;           // rgb, opacity
in vec2 i_axis1;           // half axes of the quad in pixels (support ellipse, widened)
in vec2 i_axis2;
in float i_depth;          // camera z of the centre

flat out vec2 v_centre;
flat out vec3 v_conic;
flat out vec4 v_color;
flat out float v_depth;

void main() {
    v_centre = i_centre;
    v_conic = i_conic;
    v_color = i_color;
    v_depth = i_depth;
    vec2 pix = i_centre + corner.x * i_axis1 + corner.y * i_axis2;
    // Depth of the centre, so an occluder in the depth buffer can reject hidden splats.
    float n = clip_range.x, f = clip_range.y;
    float z_ndc = (f + n) / (f - n) - 2.0 * f * n / ((f - n) * i_depth);
    gl_Position = vec4(2.0 * pix.x / image_size.x - 1.0, 1.0 - 2.0 * pix.y / image_size.y, z_ndc, 1.0);
}
