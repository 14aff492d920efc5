// Convolution as an implicit GEMM in 128 x 64 output tiles (output channels x columns): see convolution.glsl.
#version 450
#extension GL_GOOGLE_include_directive : require
#define ROWS 8u
#define COLS 4u
#include "convolution.glsl"
