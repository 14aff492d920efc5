// stb_image and stb_image_resize compiled once, in a file of their own so that the sanitizer builds can
// treat stb's code apart from ours (src/CMakeLists.txt: stb's PNG reader passes a null pointer to
// memcpy for a 0-byte IDAT chunk, harmless but reported by UBSan's nonnull-attribute check).
#define STB_IMAGE_IMPLEMENTATION
#define STBI_FAILURE_USERMSG
#include "stb_image.h"
#define STB_IMAGE_RESIZE_IMPLEMENTATION
#include "stb_image_resize.h"
