#version 330
// One instanced quad per Gaussian covering its support: the 3-sigma ellipse, shrunk to where
// alpha >= 1/255. The projection is the EWA formula of design.md, term for term as in
// savatar.core.rasterize_cpu.project_gaussians (including gsplat's clamped Jacobian).
uniform mat4 viewmat;      // world -> OpenCV camera
uniform vec4 intrinsics;   // fx, fy, cx, cy
uniform vec2 image_size;   // W, H in pixels
uniform vec4 limits;       // clamp of x/z and y/z: +x, -x, +y, -y
uniform float scale_modifier;
uniform float eps2d;
uniform vec2 clip_range;    // GL near and far planes, as in gl_projection()

in vec2 corner;            // (-1, -1) .. (1, 1)
in vec3 i_mean;
in vec4 i_quat;            // w x y z
in vec3 i_scale;
in vec4 i_color;           // rgb, opacity

flat out vec2 v_centre;    // pixel coordinates, OpenCV convention (y down)
flat out vec3 v_conic;
flat out vec4 v_color;
flat out float v_depth;

const float ALPHA_MIN = 1.0 / 255.0;
const float MAX_POWER = 4.5;  // (3 sigma)^2 / 2

mat3 quat_to_mat(vec4 q) {
    q = normalize(q);
    float w = q.x, x = q.y, y = q.z, z = q.w;
    // Columns of the rotation matrix.
    return mat3(1.0 - 2.0 * (y * y + z * z), 2.0 * (x * y + w * z), 2.0 * (x * z - w * y),
                2.0 * (x * y - w * z), 1.0 - 2.0 * (x * x + z * z), 2.0 * (y * z + w * x),
                2.0 * (x * z + w * y), 2.0 * (y * z - w * x), 1.0 - 2.0 * (x * x + y * y));
}

void main() {
    vec3 t = (viewmat * vec4(i_mean, 1.0)).xyz;
    float opacity = i_color.a;
    float cut = min(log(max(opacity, 1e-30) / ALPHA_MIN), MAX_POWER);
    if (t.z < 0.01 || cut <= 0.0) {
        gl_Position = vec4(0.0, 0.0, 2.0, 1.0);  // outside the clip volume: nothing drawn
        return;
    }
    mat3 m = quat_to_mat(i_quat) * mat3(i_scale.x * scale_modifier, 0.0, 0.0,
                                        0.0, i_scale.y * scale_modifier, 0.0,
                                        0.0, 0.0, i_scale.z * scale_modifier);
    mat3 rv = mat3(viewmat);
    mat3 cov = rv * (m * transpose(m)) * transpose(rv);
    float fx = intrinsics.x, fy = intrinsics.y;
    float u = clamp(t.x / t.z, -limits.y, limits.x);
    float v = clamp(t.y / t.z, -limits.w, limits.z);
    vec3 j0 = vec3(fx / t.z, 0.0, -fx * u / t.z);
    vec3 j1 = vec3(0.0, fy / t.z, -fy * v / t.z);
    float c00 = dot(j0, cov * j0) + eps2d;
    float c01 = dot(j0, cov * j1);
    float c11 = dot(j1, cov * j1) + eps2d;
    float det = max(c00 * c11 - c01 * c01, 1e-10);
    v_conic = vec3(c11 / det, -c01 / det, c00 / det);
    v_centre = vec2(fx * t.x / t.z + intrinsics.z, fy * t.y / t.z + intrinsics.w);
    v_color = i_color;
    v_depth = t.z;
    // Rectangle around the support ellipse along its own axes (a tilted ellipse's axis-aligned
    // box can cover twice the pixels), widened by 0.75 px so no pixel centre on its rim is lost
    // to the rasterizer's coverage rule.
    float mid = 0.5 * (c00 + c11);
    float disc = sqrt(max(mid * mid - (c00 * c11 - c01 * c01), 0.0));
    float lambda1 = mid + disc, lambda2 = max(mid - disc, 0.0);
    vec2 axis1 = abs(c01) > 1e-9 ? normalize(vec2(c01, lambda1 - c00)) : (c00 >= c11 ? vec2(1.0, 0.0) : vec2(0.0, 1.0));
    vec2 axis2 = vec2(-axis1.y, axis1.x);
    float reach = sqrt(2.0 * cut);
    vec2 pix = v_centre + corner.x * (reach * sqrt(lambda1) + 0.75) * axis1
                        + corner.y * (reach * sqrt(lambda2) + 0.75) * axis2;
    // Depth of the centre, so an occluder in the depth buffer can reject hidden splats.
    float n = clip_range.x, f = clip_range.y;
    float z_ndc = (f + n) / (f - n) - 2.0 * f * n / ((f - n) * t.z);
    gl_Position = vec4(2.0 * pix.x / image_size.x - 1.0, 1.0 - 2.0 * pix.y / image_size.y, z_ndc, 1.0);
}
