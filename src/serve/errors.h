// What goes wrong while serving a request. The library throws these; only the HTTP layer
// (serve/server.cpp) turns them into status codes.
#pragma once

#include <string>

#include "espresso/context_model.h"
#include "espresso/errors.h"

namespace espresso::serve {

// The request is malformed or does not fit the model: RequestError of espresso/context_model.h, whose
// field() names the field ("inputs[0].shape", "time"); the server answers 400 with it.

// The body is larger than the server accepts.
class BodyTooLargeError : public Error {
 public:
  using Error::Error;
};

// The client sent its body too slowly or stopped sending.
class SlowClientError : public Error {
 public:
  using Error::Error;
};

// No model or no version of that name is served.
class NotFoundError : public Error {
 public:
  using Error::Error;
};

// Too many requests in flight; the client should retry later.
class OverloadedError : public Error {
 public:
  using Error::Error;
};

// The server cannot do it now: shutting down, or the device ran out of memory again after evicting.
class UnavailableError : public Error {
 public:
  using Error::Error;
};

// A served model's file could not be loaded (or pulled); the server keeps serving the others.
class ModelLoadError : public Error {
 public:
  using Error::Error;
};

}  // namespace espresso::serve
