// The public API in one include.
#pragma once

#include "espresso/devices.h"
#include "espresso/errors.h"
#include "espresso/graph.h"
#include "espresso/image_classifier.h"
#include "espresso/import.h"
#include "espresso/model.h"
#include "espresso/net.h"
#include "espresso/onnx.h"
#include "espresso/tflite.h"
#include "espresso/tensor.h"
