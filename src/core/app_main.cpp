#include "core/app_main.h"

#include <exception>

#include "core/error.h"
#include "core/log.h"

namespace adapt {

int app_main(const std::function<int()>& body) {
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
