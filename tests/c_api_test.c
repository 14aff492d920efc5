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
