/* espresso's C API: opaque handles, status codes and messages; no C++ type crosses it, so any language
 * with a C FFI can load and run models. The C++ API (espresso/model.h) stays the primary one.
 *
 * Threads: a model may be shared by any number of threads and sessions; a session is used by one thread
 * at a time. esp_last_error() is per thread. Every function checks its arguments: a NULL handle or
 * pointer is ESP_ERROR_INVALID_ARGUMENT, never a crash. */
#ifndef ESPRESSO_C_API_H
#define ESPRESSO_C_API_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct esp_model esp_model;
typedef struct esp_session esp_session;

typedef enum esp_status {
  ESP_OK = 0,
  ESP_ERROR_INVALID_ARGUMENT = 1, /* a NULL handle or pointer, an unknown enum value */
  ESP_ERROR_FILE = 2,             /* missing, unreadable or cut-short files */
  ESP_ERROR_PARSE = 3,            /* contents that do not follow the format */
  ESP_ERROR_MODEL = 4,            /* unknown layers, bad attributes, unknown input or output names */
  ESP_ERROR_SHAPE = 5,            /* tensors that do not fit */
  ESP_ERROR_UNSUPPORTED = 6,      /* valid requests this build or device cannot carry out */
  ESP_ERROR_DATA = 7,             /* datasets and images that cannot be used */
  ESP_ERROR_DEVICE = 8,           /* no such device, out of device memory, kernel errors */
  ESP_ERROR_INTERNAL = 9,         /* anything else; the message says what */
  ESP_ERROR_LIMIT = 10            /* the input asks for more than espresso/limits.h allows */
} esp_status;

typedef enum esp_format {
  ESP_FORMAT_CAFFE = 0,
  ESP_FORMAT_ONNX = 1,
  ESP_FORMAT_ESP = 2,
  ESP_FORMAT_TFLITE = 3, /* TensorFlow Lite .tflite */
  /* Makes every 32-bit value representable, so a bad value from a caller is checked, not undefined. */
  ESP_FORMAT_MAX_ENUM = 0x7FFFFFFF
} esp_format;

/* The message of this thread's last failed call ("" when none failed). */
const char* esp_last_error(void);
const char* esp_version(void);

/* Loads a model file (Caffe .prototxt with optional .caffemodel weights_path, .onnx or .esp; weights_path
 * NULL or "" otherwise) onto device "cpu", "cuda" or "cuda:N" (NULL: "cpu"). */
esp_status esp_model_load(const char* path, const char* weights_path, const char* device, esp_model** model);
/* The same from memory: for Caffe `bytes` is the prototxt text and `weights` the caffemodel (may be NULL);
 * ONNX and .esp carry their weights. The buffers may be freed once this returns. */
esp_status esp_model_load_memory(const void* bytes, size_t size, const void* weights, size_t weights_size,
                                 esp_format format, const char* device, esp_model** model);
/* Releases a model; sessions made from it keep it alive until they are released too. NULL is ignored. */
void esp_model_release(esp_model* model);
/* Graph inputs and outputs by index; names stay valid as long as the model. */
esp_status esp_model_input_count(const esp_model* model, size_t* count);
esp_status esp_model_input_name(const esp_model* model, size_t index, const char** name);
esp_status esp_model_output_count(const esp_model* model, size_t* count);
esp_status esp_model_output_name(const esp_model* model, size_t index, const char** name);

/* A session runs a model: its own activations and `threads` CPU worker threads (0: the process's). */
esp_status esp_session_create(const esp_model* model, int threads, esp_session** session);
void esp_session_release(esp_session* session);
/* Copies a row-major f32 tensor of shape dims[0..rank) into input `name`, reshaping the session as
 * needed (a new batch size, say). */
esp_status esp_session_set_input(esp_session* session, const char* name, const float* data, const int64_t* dims,
                                 size_t rank);
esp_status esp_session_run(esp_session* session);
/* Output `name` of the last run, on the host: `*data` stays valid until the next run or the release.
 * `dims` has room for `*rank` values on entry; on return `*rank` is the output's rank (dims is filled
 * when it fits, else ESP_ERROR_SHAPE). */
esp_status esp_session_output(esp_session* session, const char* name, const float** data, int64_t* dims,
                              size_t* rank);

/* Decodes an image file (JPEG, PNG, BMP, ...) into planar f32 values for a model input, as the CLI does:
 * `channels` 1 (gray) or 3 (B,G,R), resized to height x width, then (pixel - mean[c]) * scale (`mean` NULL
 * for none, else one value per channel). `values` has room for channels * height * width floats. */
esp_status esp_image_load(const char* path, int channels, int height, int width, const float* mean, float scale,
                          float* values);

#ifdef __cplusplus
}
#endif

#endif /* ESPRESSO_C_API_H */
