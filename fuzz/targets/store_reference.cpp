// Model references as users type them (`espresso pull host:5000/vision/lenet:1.0@sha256:...`) and the
// repository names, tags and digests a registry receives in request paths.
#include <cstdlib>

#include "espresso/store.h"
#include "fuzz_target.h"

ESPRESSO_FUZZ_TARGET(store_reference) {
  const std::string_view text = espresso::fuzz::as_text(data, size);
  espresso::store::valid_repository(text);
  espresso::store::valid_tag(text);
  espresso::store::valid_digest(text);
  if (espresso::store::Reference::looks_like(text)) {
    using espresso::store::Reference;
    const Reference reference = Reference::parse(text, "registry.example:5000");
    // What a reference prints must parse back to the same reference.
    try {
      const Reference again = Reference::parse(reference.str());
      if (again.registry != reference.registry || again.name != reference.name || again.tag != reference.tag ||
          again.digest != reference.digest)
        std::abort();
    } catch (const espresso::Error&) {
      std::abort();
    }
  }
}
