// The code of a reply: an instruction-tuned model answers "write X" with prose around Markdown code
// fences, and a prompt's output file (output_code = true) should hold what compiles. CommonMark's
// fenced code blocks: a line of at least three backticks or tildes (indented by up to three spaces,
// then an optional info string such as "cpp"; an info string of a backtick fence holds no backtick)
// opens a block, which a line of at least as many of the same character (indented by up to three
// spaces, nothing after but spaces) closes; the end of the text closes an open block (a reply cut by
// max_new_tokens).
#pragma once

#include <string>
#include <string_view>

namespace adapt::generate {

/// The contents of every fenced code block of `text`, in order, each ending with a newline, separated
/// by a blank line; `text` itself when it has no fence (a reply that is code already).
std::string extract_code(std::string_view text);

}  // namespace adapt::generate
