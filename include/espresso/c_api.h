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

/* The arithmetic of a session (docs/precision.md): fp32 everywhere by default; tf32, fp16 and bf16 are
 * GPU plans, and a layer without a kernel in them runs in fp32 unless the session is strict. Inputs and
 * outputs are f32 whatever the precision. */
typedef enum esp_precision {
  ESP_PRECISION_FP32 = 0,
  ESP_PRECISION_TF32 = 1,
  ESP_PRECISION_FP16 = 2,
  ESP_PRECISION_BF16 = 3,
  ESP_PRECISION_MAX_ENUM = 0x7FFFFFFF
} esp_precision;

/* Element types of tensors (what esp_model_input_dtype reports; this API passes f32 values). */
typedef enum esp_dtype {
  ESP_DTYPE_F32 = 0,
  ESP_DTYPE_F16 = 1,
  ESP_DTYPE_BF16 = 2,
  ESP_DTYPE_I8 = 3,
  ESP_DTYPE_I32 = 4,
  ESP_DTYPE_I64 = 5,
  ESP_DTYPE_MAX_ENUM = 0x7FFFFFFF
} esp_dtype;

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

/* Metadata. Shapes: dims has room for *rank values on entry; on return *rank is the rank (dims filled when
 * it fits, else ESP_ERROR_SHAPE). Input shapes are the model's declared ones (dimension 0 the batch);
 * output shapes are inferred for them (the first call plans the model once on its device). Inputs and
 * outputs are ESP_DTYPE_F32 to callers of this API. */
esp_status esp_model_input_shape(const esp_model* model, size_t index, int64_t* dims, size_t* rank);
esp_status esp_model_output_shape(const esp_model* model, size_t index, int64_t* dims, size_t* rank);
esp_status esp_model_input_dtype(const esp_model* model, size_t index, esp_dtype* dtype);
esp_status esp_model_output_dtype(const esp_model* model, size_t index, esp_dtype* dtype);
esp_status esp_model_layer_count(const esp_model* model, size_t* count);
/* A text of the model's metadata by key; "" where the model does not say. Keys: "name", "format" (what
 * it was loaded from: "caffe", "onnx", "esp" or "tflite"), "source_format" (what an .esp was converted
 * from), "producer" (the program that wrote the file, where the format records it), "version",
 * "description", "task", "license", "author", "created". Another key is ESP_ERROR_INVALID_ARGUMENT. The
 * text stays valid as long as the model. */
esp_status esp_model_metadata(const esp_model* model, const char* key, const char** value);
/* Class labels, where the model carries them (.esp packages may); 0 otherwise. */
esp_status esp_model_label_count(const esp_model* model, size_t* count);
esp_status esp_model_label(const esp_model* model, size_t index, const char** label);

/* A session runs a model: its own activations and `threads` CPU worker threads (0: the process's). */
esp_status esp_session_create(const esp_model* model, int threads, esp_session** session);
/* The same in another precision; `strict` non-zero makes a layer without a kernel in it an error
 * (ESP_ERROR_UNSUPPORTED naming the layers) instead of running it in fp32. On the CPU every precision
 * but fp32 falls back to fp32 per layer. */
esp_status esp_session_create_with_precision(const esp_model* model, int threads, esp_precision precision,
                                             int strict, esp_session** session);
/* The precision a session was created with. */
esp_status esp_session_precision(const esp_session* session, esp_precision* precision);
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

/* Layer types from C: one output, no learned weights, CPU f32 (espresso/custom_layer.h has the rest).
 * `shape` gets the inputs' shapes and writes the output's into output_dims (room for ESP_MAX_RANK values)
 * and *output_rank; `forward` gets the inputs' values and shapes and fills `output` (row-major, of the shape
 * `shape` gave). Either returns ESP_OK, or another status to fail the load or run that called it. Both may
 * be called from any thread (one call per session at a time); `user_data` is passed through. A type named
 * like a built-in one or one already registered is ESP_ERROR_MODEL. Registrations last for the process. */
#define ESP_MAX_RANK 8
typedef esp_status (*esp_layer_shape_fn)(void* user_data, size_t input_count, const int64_t* const* input_dims,
                                         const size_t* input_ranks, int64_t* output_dims, size_t* output_rank);
typedef esp_status (*esp_layer_forward_fn)(void* user_data, size_t input_count, const float* const* inputs,
                                           const int64_t* const* input_dims, const size_t* input_ranks,
                                           float* output);
esp_status esp_register_layer(const char* type, esp_layer_shape_fn shape, esp_layer_forward_fn forward,
                              void* user_data);

/* Decodes an image file (JPEG, PNG, BMP, ...) into planar f32 values for a model input, as the CLI does:
 * `channels` 1 (gray) or 3 (B,G,R), resized to height x width, then (pixel - mean[c]) * scale (`mean` NULL
 * for none, else one value per channel). `values` has room for channels * height * width floats. */
esp_status esp_image_load(const char* path, int channels, int height, int width, const float* mean, float scale,
                          float* values);

#ifdef __cplusplus
}
#endif

#endif /* ESPRESSO_C_API_H */
