#include "core/app_main.h"

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <exception>

#include "core/error.h"
#include "core/log.h"

namespace adapt {

void app_process_setup() {
#if defined(__GLIBC__)
  mallopt(M_MMAP_THRESHOLD, 128 * 1024);  // glibc's initial value, now fixed (see the header)
#endif
}

int app_main(const std::function<int()>& body) {
  app_process_setup();
  try {
    return body();
  } catch (const Error& e) {
    log::error("{}", e.what());
    return static_cast<int>(e.exit_code());
  } catch (const std::exception& e) {
    const UnexpectedError u = classify_unexpected(e);
    log::error("{}", u.message);
    return static_cast<int>(u.code);
  }
}

}  // namespace adapt
