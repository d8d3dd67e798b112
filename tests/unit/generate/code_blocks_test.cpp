// extract_code against CommonMark's fenced code blocks (https://spec.commonmark.org/0.31.2/#fenced-code-blocks):
// backtick and tilde fences with and without info strings, a closing fence at least as long as the
// opening one, up to three spaces of indentation, several blocks, a block cut by the end of the text,
// inline code and text without fences.
#include "generate/code_blocks.h"

#include <doctest/doctest.h>

using adapt::generate::extract_code;

TEST_CASE("extract_code: the contents of fenced code blocks") {
  // One block with an info string, prose around it.
  CHECK(extract_code("Here is the class:\n\n```cpp\n#pragma once\nint f();\n```\n\nIt returns 1.\n") ==
        "#pragma once\nint f();\n");
  // Two blocks: joined by a blank line, in order; tilde fences too; blank lines inside kept.
  CHECK(extract_code("```\na\n\nb\n```\ntext\n~~~ python\nc\n~~~\n") == "a\n\nb\n\nc\n");
  // A closing fence must use the opening character, be at least as long, and have nothing after it.
  CHECK(extract_code("````\n```\nx\n```` \n") == "```\nx\n");
  CHECK(extract_code("```\n~~~\ny\n```\n") == "~~~\ny\n");
  CHECK(extract_code("```\n``` not a close\nz\n```\n") == "``` not a close\nz\n");
  // Up to three spaces before a fence; four make an indented line, not a fence.
  CHECK(extract_code("   ```c\nint x;\n   ```\n") == "int x;\n");
  CHECK(extract_code("    ```\ncode?\n") == "    ```\ncode?\n");
  // A reply cut inside a block (finish_reason "length"): the block runs to the end of the text.
  CHECK(extract_code("Sure.\n```rust\nfn main() {\n    println!(\"hi\");") == "fn main() {\n    println!(\"hi\");\n");
  // Inline code (a backtick in a backtick fence's info string) and two backticks open nothing.
  CHECK(extract_code("Use ```x``` here.\n``y``\n") == "Use ```x``` here.\n``y``\n");
  // No fence at all: the reply is code already, written as it is (no newline added).
  CHECK(extract_code("int main() { return 0; }") == "int main() { return 0; }");
  CHECK(extract_code("") == "");
  // CRLF line ends: the closing fence's trailing \r is space; content lines keep theirs.
  CHECK(extract_code("```\r\nq\r\n```\r\n") == "q\r\n");
}
