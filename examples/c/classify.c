/* Classifies a digit image with a Caffe LeNet through espresso's C API and prints the ten classes by
 * probability, as `espresso classify --top 10 --scale 0.00390625` does.
 *   classify LENET.prototxt LENET.caffemodel DIGIT.png
 * Build: cc classify.c $(pkg-config --cflags --libs espresso-c), or CMake (CMakeLists.txt here). */
#include <espresso/c_api.h>

#include <stdio.h>

static int report(esp_status status) {
  if (status != ESP_OK) fprintf(stderr, "error: %s\n", esp_last_error());
  return status != ESP_OK;
}

int main(int argc, char** argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s LENET.prototxt LENET.caffemodel DIGIT.png\n", argv[0]);
    return 2;
  }
  esp_model* model = NULL;
  esp_session* session = NULL;
  float pixels[28 * 28];
  const int64_t dims[4] = {1, 1, 28, 28};
  const float* prob = NULL;
  int64_t out_dims[2];
  size_t rank = 2;
  if (report(esp_model_load(argv[1], argv[2], "cpu", &model)) || report(esp_session_create(model, 0, &session)) ||
      report(esp_image_load(argv[3], 1, 28, 28, NULL, 0.00390625f, pixels)) ||
      report(esp_session_set_input(session, "data", pixels, dims, 4)) || report(esp_session_run(session)) ||
      report(esp_session_output(session, "prob", &prob, out_dims, &rank))) {
    esp_session_release(session);
    esp_model_release(model);
    return 1;
  }
  int order[10] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
  for (int i = 0; i < 10; ++i) { /* selection sort, most probable first */
    for (int j = i + 1; j < 10; ++j) {
      if (prob[order[j]] > prob[order[i]]) {
        const int t = order[i];
        order[i] = order[j];
        order[j] = t;
      }
    }
  }
  printf("%s\n", argv[3]);
  for (int i = 0; i < 10; ++i) printf("  %d. class %d  prob %.6f\n", i + 1, order[i], prob[order[i]]);
  esp_session_release(session);
  esp_model_release(model);
  return 0;
}
