#version 330
out vec4 f_color;
void main() {
    f_color = vec4(0.05, 0.35, 0.95, 1.0);
}
