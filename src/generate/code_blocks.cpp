#include "generate/code_blocks.h"

#include <cstddef>

#include "core/strings.h"

namespace adapt::generate {

namespace {

struct Fence {
  char ch = 0;          // '`' or '~'
  std::size_t len = 0;  // the run's length (>= 3)
};

/// The fence `line` opens or closes (up to three spaces, then a run of three or more backticks or
/// tildes), with what follows the run in `rest`; ch 0 when it is not one.
Fence fence_of(std::string_view line, std::string_view* rest) {
  std::size_t at = 0;
  while (at < line.size() && at < 3 && line[at] == ' ') ++at;
  if (at >= line.size() || (line[at] != '`' && line[at] != '~')) return {};
  const char ch = line[at];
  std::size_t end = at;
  while (end < line.size() && line[end] == ch) ++end;
  if (end - at < 3) return {};
  *rest = line.substr(end);
  return {ch, end - at};
}

}  // namespace

std::string extract_code(std::string_view text) {
  std::string out;
  bool any = false;
  Fence open;  // the block being read (ch 0: outside any block)
  std::size_t pos = 0;
  for (std::string_view line; next_line(text, &pos, &line);) {
    std::string_view rest;
    const Fence f = fence_of(line, &rest);
    if (open.ch == 0) {
      // An opening fence; a backtick fence's info string holds no backtick (else it is inline code).
      if (f.ch != 0 && (f.ch == '~' || rest.find('`') == std::string_view::npos)) {
        if (any) out += '\n';
        any = true;
        open = f;
      }
      continue;
    }
    if (f.ch == open.ch && f.len >= open.len && is_blank(rest)) {
      open = {};
      continue;
    }
    out.append(line);
    out += '\n';
  }
  return any ? out : std::string(text);
}

}  // namespace adapt::generate
