/* The C API from C: LeNet from a file and from memory classifies MNIST test digits (read here with zlib)
 * as well as the C++ API does, and every error path returns its status and a message instead of
 * crashing. Usage: espresso_c_api_test DATA_DIR (the shared data: caffe/lenet, mnist). */
#include <espresso/c_api.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

static int passed = 0, failed = 0;

static void check(int condition, const char* what) {
  if (condition) {
    ++passed;
  } else {
    ++failed;
    printf("FAILED: %s (last error: %s)\n", what, esp_last_error());
  }
}

/* The whole of a (possibly gzip-compressed) file; NULL when it cannot be read. */
static unsigned char* read_all(const char* path, size_t* size) {
  gzFile file = gzopen(path, "rb");
  if (file == NULL) return NULL;
  size_t capacity = 1 << 20, used = 0;
  unsigned char* bytes = malloc(capacity);
  int n;
  while (bytes != NULL && (n = gzread(file, bytes + used, (unsigned)(capacity - used))) > 0) {
    used += (size_t)n;
    if (used == capacity) bytes = realloc(bytes, capacity *= 2);
  }
  gzclose(file);
  *size = used;
  return bytes;
}

static int expect_error(esp_status status, esp_status expected, const char* needle, const char* what) {
  const int ok = status == expected && strstr(esp_last_error(), needle) != NULL;
  check(ok, what);
  return ok;
}

/* A layer from C: y = 2 x (same shape as its one input); user_data counts the forward calls. */
static esp_status twice_shape(void* user_data, size_t input_count, const int64_t* const* input_dims,
                              const size_t* input_ranks, int64_t* output_dims, size_t* output_rank) {
  (void)user_data;
  if (input_count != 1) return ESP_ERROR_SHAPE;
  for (size_t i = 0; i < input_ranks[0]; ++i) output_dims[i] = input_dims[0][i];
  *output_rank = input_ranks[0];
  return ESP_OK;
}

static esp_status twice_forward(void* user_data, size_t input_count, const float* const* inputs,
                                const int64_t* const* input_dims, const size_t* input_ranks, float* output) {
  int64_t n = 1;
  (void)input_count;
  for (size_t i = 0; i < input_ranks[0]; ++i) n *= input_dims[0][i];
  for (int64_t i = 0; i < n; ++i) output[i] = 2.0f * inputs[0][i];
  ++*(int*)user_data;
  return ESP_OK;
}

static esp_status failing_forward(void* user_data, size_t input_count, const float* const* inputs,
                                  const int64_t* const* input_dims, const size_t* input_ranks, float* output) {
  (void)user_data, (void)input_count, (void)inputs, (void)input_dims, (void)input_ranks, (void)output;
  return ESP_ERROR_DATA;
}

/* Registers the C layers and runs them in Caffe prototxts loaded from memory. */
static void check_custom_layers(void) {
  static int calls = 0;
  check(esp_register_layer("CTwice", twice_shape, twice_forward, &calls) == ESP_OK, "register a C layer");
  expect_error(esp_register_layer("CTwice", twice_shape, twice_forward, &calls), ESP_ERROR_MODEL, "registered already",
               "a C layer registered twice");
  expect_error(esp_register_layer("ReLU", twice_shape, twice_forward, NULL), ESP_ERROR_MODEL, "built-in",
               "a C layer named like a built-in one");
  expect_error(esp_register_layer(NULL, twice_shape, twice_forward, NULL), ESP_ERROR_INVALID_ARGUMENT,
               "'type' is NULL", "NULL layer type");
  expect_error(esp_register_layer("CNoShape", NULL, twice_forward, NULL), ESP_ERROR_INVALID_ARGUMENT,
               "'shape' is NULL", "NULL shape callback");
  check(esp_register_layer("CFailing", twice_shape, failing_forward, NULL) == ESP_OK, "register a failing layer");

  static const char twice_net[] =
      "name: \"c_layers\" input: \"x\" input_shape { dim: 1 dim: 4 }\n"
      "layer { name: \"twice\" type: \"CTwice\" bottom: \"x\" top: \"y\" }\n";
  esp_model* model = NULL;
  esp_session* session = NULL;
  check(esp_model_load_memory(twice_net, sizeof twice_net - 1, NULL, 0, ESP_FORMAT_CAFFE, NULL, &model) == ESP_OK,
        "a prototxt with the C layer");
  check(esp_session_create(model, 1, &session) == ESP_OK, "its session");
  const float x[4] = {1.0f, -2.0f, 0.5f, 3.0f};
  const int64_t dims[2] = {1, 4};
  const float* y = NULL;
  int64_t y_dims[2];
  size_t rank = 2;
  check(esp_session_set_input(session, "x", x, dims, 2) == ESP_OK && esp_session_run(session) == ESP_OK &&
            esp_session_output(session, "y", &y, y_dims, &rank) == ESP_OK,
        "run the C layer");
  check(y != NULL && rank == 2 && y_dims[1] == 4 && y[0] == 2.0f && y[1] == -4.0f && y[2] == 1.0f && y[3] == 6.0f &&
            calls == 1,
        "the C layer doubles its input, called once");
  const int64_t wrong[3] = {1, 2, 2};
  check(esp_session_set_input(session, "x", x, wrong, 3) == ESP_OK && esp_session_run(session) == ESP_OK,
        "the C layer follows a new input shape");
  esp_session_release(session);
  esp_model_release(model);

  static const char failing_net[] =
      "name: \"c_layers\" input: \"x\" input_shape { dim: 1 dim: 4 }\n"
      "layer { name: \"broken\" type: \"CFailing\" bottom: \"x\" top: \"y\" }\n";
  model = NULL;
  session = NULL;
  check(esp_model_load_memory(failing_net, sizeof failing_net - 1, NULL, 0, ESP_FORMAT_CAFFE, NULL, &model) == ESP_OK &&
            esp_session_create(model, 1, &session) == ESP_OK &&
            esp_session_set_input(session, "x", x, dims, 2) == ESP_OK,
        "a net with a failing C layer");
  expect_error(esp_session_run(session), ESP_ERROR_MODEL, "returned status 7", "a C layer's failure");
  esp_session_release(session);
  esp_model_release(model);
}

/* Top-1 accuracy of a session over the first `count` test images (scaled as Caffe's LeNet wants). */
static double accuracy(esp_session* session, const unsigned char* images, const unsigned char* labels, int count) {
  int correct = 0;
  float input[28 * 28];
  const int64_t dims[4] = {1, 1, 28, 28};
  for (int i = 0; i < count; ++i) {
    for (int p = 0; p < 28 * 28; ++p) input[p] = (float)images[16 + i * 28 * 28 + p] * 0.00390625f;
    if (esp_session_set_input(session, "data", input, dims, 4) != ESP_OK || esp_session_run(session) != ESP_OK) return -1;
    const float* prob = NULL;
    int64_t out_dims[4];
    size_t rank = 4;
    if (esp_session_output(session, "prob", &prob, out_dims, &rank) != ESP_OK || rank != 2 || out_dims[1] != 10) return -1;
    int best = 0;
    for (int k = 1; k < 10; ++k) {
      if (prob[k] > prob[best]) best = k;
    }
    if (best == labels[8 + i]) ++correct;
  }
  return (double)correct / count;
}

int main(int argc, char** argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s DATA_DIR\n", argv[0]);
    return 2;
  }
  char prototxt[1024], caffemodel[1024], images_path[1024], labels_path[1024];
  snprintf(prototxt, sizeof prototxt, "%s/caffe/lenet/v2_format/lenet.prototxt", argv[1]);
  snprintf(caffemodel, sizeof caffemodel, "%s/caffe/lenet/lenet_iter_10000.caffemodel", argv[1]);
  snprintf(images_path, sizeof images_path, "%s/mnist/t10k-images-idx3-ubyte.gz", argv[1]);
  snprintf(labels_path, sizeof labels_path, "%s/mnist/t10k-labels-idx1-ubyte.gz", argv[1]);
  size_t images_size = 0, labels_size = 0, proto_size = 0, weights_size = 0;
  unsigned char* images = read_all(images_path, &images_size);
  unsigned char* labels = read_all(labels_path, &labels_size);
  unsigned char* proto = read_all(prototxt, &proto_size);
  unsigned char* weights = read_all(caffemodel, &weights_size);
  if (!images || !labels || !proto || !weights || images_size < 16 + 200 * 784 || labels_size < 8 + 200) {
    printf("SKIPPED: shared data missing in %s\n", argv[1]);
    return 77;
  }

  esp_model* model = NULL;
  check(esp_model_load(prototxt, caffemodel, "cpu", &model) == ESP_OK && model != NULL, "load LeNet from files");
  size_t count = 0;
  const char* name = NULL;
  check(esp_model_input_count(model, &count) == ESP_OK && count == 1, "one input");
  check(esp_model_input_name(model, 0, &name) == ESP_OK && strcmp(name, "data") == 0, "input named data");
  check(esp_model_output_count(model, &count) == ESP_OK && count == 1, "one output");
  check(esp_model_output_name(model, 0, &name) == ESP_OK && strcmp(name, "prob") == 0, "output named prob");

  esp_session* session = NULL;
  check(esp_session_create(model, 1, &session) == ESP_OK, "session");
  const double from_file = accuracy(session, images, labels, 200);
  check(from_file >= 0.98, "LeNet from files classifies >= 98% of 200 test digits");

  esp_model* in_memory = NULL;
  check(esp_model_load_memory(proto, proto_size, weights, weights_size, ESP_FORMAT_CAFFE, NULL, &in_memory) == ESP_OK,
        "load LeNet from memory");
  esp_session* memory_session = NULL;
  check(esp_session_create(in_memory, 0, &memory_session) == ESP_OK, "session of the in-memory model");
  check(accuracy(memory_session, images, labels, 200) == from_file, "the in-memory model gives the same accuracy");

  /* Error paths: each returns its status and says what is wrong. */
  esp_model* none = NULL;
  expect_error(esp_model_load(NULL, NULL, NULL, &none), ESP_ERROR_INVALID_ARGUMENT, "'path' is NULL", "NULL path");
  expect_error(esp_model_load(prototxt, NULL, NULL, NULL), ESP_ERROR_INVALID_ARGUMENT, "'model' is NULL", "NULL out");
  expect_error(esp_model_load("/no/such/model.prototxt", NULL, NULL, &none), ESP_ERROR_FILE, "no such file",
               "missing file");
  check(none == NULL, "no model on failure");
  expect_error(esp_model_load(prototxt, caffemodel, "tpu", &none), ESP_ERROR_UNSUPPORTED, "tpu", "unknown device");
  expect_error(esp_model_load_memory(proto, proto_size, weights, weights_size / 2, ESP_FORMAT_CAFFE, NULL, &none),
               ESP_ERROR_PARSE, "<memory>", "truncated caffemodel in memory");
  expect_error(esp_model_load_memory(proto, proto_size, NULL, 0, (esp_format)7, NULL, &none),
               ESP_ERROR_INVALID_ARGUMENT, "unknown format", "unknown format");
  expect_error(esp_model_load_memory(proto, proto_size, weights, weights_size, ESP_FORMAT_ONNX, NULL, &none),
               ESP_ERROR_UNSUPPORTED, "carry their own weights", "weights for an ONNX model");
  expect_error(esp_model_input_name(model, 3, &name), ESP_ERROR_INVALID_ARGUMENT, "index 3", "input index");
  expect_error(esp_session_create(NULL, 0, &session), ESP_ERROR_INVALID_ARGUMENT, "'model' is NULL", "NULL model");

  esp_session* fresh = NULL;
  esp_session* none_session = NULL;
  check(esp_session_create(model, 0, &fresh) == ESP_OK, "another session");
  const float* data = NULL;
  int64_t dims[4];
  size_t rank = 4;
  expect_error(esp_session_output(fresh, "prob", &data, dims, &rank), ESP_ERROR_MODEL, "run first", "output before run");
  const float pixels[28 * 28] = {0};
  const int64_t flat[2] = {1, 784};
  expect_error(esp_session_set_input(fresh, "pixels", pixels, flat, 2), ESP_ERROR_MODEL, "pixels", "unknown input");
  expect_error(esp_session_set_input(fresh, "data", pixels, flat, 2), ESP_ERROR_SHAPE, "conv1", "input of the wrong rank");
  expect_error(esp_session_set_input(fresh, "data", NULL, flat, 2), ESP_ERROR_INVALID_ARGUMENT, "'data' is NULL",
               "NULL data");
  const int64_t image[4] = {1, 1, 28, 28};
  check(esp_session_set_input(fresh, "data", pixels, image, 4) == ESP_OK && esp_session_run(fresh) == ESP_OK,
        "a run after the errors");
  rank = 1;
  expect_error(esp_session_output(fresh, "prob", &data, dims, &rank), ESP_ERROR_SHAPE, "room for 1", "small dims");
  check(rank == 2, "the needed rank is reported");
  expect_error(esp_session_run(NULL), ESP_ERROR_INVALID_ARGUMENT, "'session' is NULL", "NULL session");

  /* Metadata: LeNet's prototxt declares data 64x1x28x28 and ten classes; the ONNX mnist-1 model of the
   * model zoo was written by CNTK 2.4 with input Input3 [1,1,28,28] and logits [1,10] (shared data's
   * MANIFEST.md). */
  int64_t shape[8];
  size_t shape_rank = 8;
  const char* text = NULL;
  esp_dtype dtype = ESP_DTYPE_I64;
  check(esp_model_input_shape(model, 0, shape, &shape_rank) == ESP_OK && shape_rank == 4 && shape[0] == 64 &&
            shape[1] == 1 && shape[2] == 28 && shape[3] == 28,
        "LeNet's input shape 64x1x28x28");
  shape_rank = 8;
  check(esp_model_output_shape(model, 0, shape, &shape_rank) == ESP_OK && shape_rank == 2 && shape[0] == 64 &&
            shape[1] == 10,
        "LeNet's output shape 64x10, inferred");
  check(esp_model_input_dtype(model, 0, &dtype) == ESP_OK && dtype == ESP_DTYPE_F32, "input dtype f32");
  dtype = ESP_DTYPE_I64;
  check(esp_model_output_dtype(model, 0, &dtype) == ESP_OK && dtype == ESP_DTYPE_F32, "output dtype f32");
  check(esp_model_layer_count(model, &count) == ESP_OK && count == 8, "LeNet's 8 layers (conv, pool x2, ip x2, relu, prob)");
  check(esp_model_metadata(model, "format", &text) == ESP_OK && strcmp(text, "caffe") == 0, "format caffe");
  check(esp_model_metadata(model, "name", &text) == ESP_OK && strcmp(text, "LeNet") == 0, "name LeNet");
  check(esp_model_metadata(model, "producer", &text) == ESP_OK && strcmp(text, "") == 0, "Caffe names no producer");
  check(esp_model_label_count(model, &count) == ESP_OK && count == 0, "no labels in a Caffe model");
  expect_error(esp_model_metadata(model, "colour", &text), ESP_ERROR_INVALID_ARGUMENT, "unknown key 'colour'",
               "unknown metadata key");
  expect_error(esp_model_metadata(NULL, "name", &text), ESP_ERROR_INVALID_ARGUMENT, "'model' is NULL",
               "metadata of NULL");
  expect_error(esp_model_metadata(model, NULL, &text), ESP_ERROR_INVALID_ARGUMENT, "'key' is NULL", "NULL key");
  expect_error(esp_model_label(model, 0, &text), ESP_ERROR_INVALID_ARGUMENT, "index 0", "label past the end");
  shape_rank = 3;
  expect_error(esp_model_input_shape(model, 0, shape, &shape_rank), ESP_ERROR_SHAPE, "room for 3", "short dims");
  check(shape_rank == 4, "the input's rank is reported");
  expect_error(esp_model_output_shape(model, 1, shape, &shape_rank), ESP_ERROR_INVALID_ARGUMENT, "index 1",
               "output index");
  expect_error(esp_model_input_dtype(model, 0, NULL), ESP_ERROR_INVALID_ARGUMENT, "'dtype' is NULL", "NULL dtype");
  expect_error(esp_model_layer_count(NULL, &count), ESP_ERROR_INVALID_ARGUMENT, "'model' is NULL", "layers of NULL");

  char onnx_path[1024];
  snprintf(onnx_path, sizeof onnx_path, "%s/onnx/mnist-1/model.onnx", argv[1]);
  size_t onnx_size = 0;
  unsigned char* onnx = read_all(onnx_path, &onnx_size);
  if (onnx != NULL) {
    esp_model* cntk = NULL;
    check(esp_model_load(onnx_path, NULL, NULL, &cntk) == ESP_OK, "load ONNX mnist-1");
    check(esp_model_metadata(cntk, "format", &text) == ESP_OK && strcmp(text, "onnx") == 0, "format onnx");
    check(esp_model_metadata(cntk, "producer", &text) == ESP_OK && strstr(text, "CNTK") != NULL &&
              strstr(text, "2.4") != NULL,
          "producer CNTK 2.4");
    check(esp_model_input_name(cntk, 0, &name) == ESP_OK && strcmp(name, "Input3") == 0, "input Input3");
    shape_rank = 8;
    check(esp_model_output_shape(cntk, 0, shape, &shape_rank) == ESP_OK && shape_rank == 2 && shape[0] == 1 &&
              shape[1] == 10,
          "mnist-1's logits 1x10");
    esp_model_release(cntk);
    /* A buffer shorter than the model it starts: a parse error naming the buffer, no crash. */
    expect_error(esp_model_load_memory(onnx, onnx_size / 2, NULL, 0, ESP_FORMAT_ONNX, NULL, &none), ESP_ERROR_PARSE,
                 "<memory>", "ONNX model cut short in memory");
    expect_error(esp_model_load_memory(onnx, 16, NULL, 0, ESP_FORMAT_ESP, NULL, &none), ESP_ERROR_PARSE, "<memory>",
                 "16 bytes as an .esp package");
    free(onnx);
  } else {
    printf("note: %s missing, ONNX metadata not checked\n", onnx_path);
  }

  /* Precision: on the CPU fp16 has no kernels, so every layer falls back to fp32 (the same numbers), and a
   * strict session refuses to run. */
  esp_session* half = NULL;
  esp_precision precision = ESP_PRECISION_FP32;
  check(esp_session_create_with_precision(model, 1, ESP_PRECISION_FP16, 0, &half) == ESP_OK, "fp16 session");
  check(esp_session_precision(half, &precision) == ESP_OK && precision == ESP_PRECISION_FP16, "its precision");
  check(accuracy(half, images, labels, 50) == accuracy(fresh, images, labels, 50),
        "fp16 on the CPU falls back to fp32: the same results");
  esp_session* strict = NULL;
  check(esp_session_create_with_precision(model, 1, ESP_PRECISION_BF16, 1, &strict) == ESP_OK, "strict bf16 session");
  /* (Planning happens on first use: setting the input or running.) */
  esp_status strict_status = esp_session_set_input(strict, "data", pixels, image, 4);
  if (strict_status == ESP_OK) strict_status = esp_session_run(strict);
  expect_error(strict_status, ESP_ERROR_UNSUPPORTED, "strict precision", "strict bf16 on the CPU");
  expect_error(esp_session_create_with_precision(model, 1, (esp_precision)9, 0, &none_session),
               ESP_ERROR_INVALID_ARGUMENT, "unknown precision 9", "unknown precision");
  check(none_session == NULL, "no session on failure");
  expect_error(esp_session_precision(NULL, &precision), ESP_ERROR_INVALID_ARGUMENT, "'session' is NULL",
               "precision of NULL");
  esp_session_release(strict);
  esp_session_release(half);

  check_custom_layers();

  /* Sessions keep their model alive after it is released. */
  esp_model_release(model);
  check(accuracy(session, images, labels, 20) >= 0.9, "a session outlives its released model");
  esp_session_release(fresh);
  esp_session_release(session);
  esp_session_release(memory_session);
  esp_model_release(in_memory);
  esp_model_release(NULL);
  esp_session_release(NULL);
  free(images);
  free(labels);
  free(proto);
  free(weights);
  printf("%d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}
