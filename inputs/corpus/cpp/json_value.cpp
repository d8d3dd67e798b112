// json_value.cpp - a small, self-contained JSON value type with a strict parser and a printer.
//
// The parser follows RFC 8259: no trailing commas, no comments, no leading zeros, and every string
// must be valid UTF-8 after escape processing. Errors carry the line and column where parsing
// stopped, which makes them useful for configuration files edited by hand.
//
// Build and run the self-tests:
//   g++ -std=c++17 -O2 -Wall -Wextra json_value.cpp -o json_value && ./json_value

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <variant>
#include <vector>

namespace mini_json {

class Value;
using Array = std::vector<Value>;
using Object = std::map<std::string, Value>;

// A parse failure, with the 1-based position of the offending character.
class ParseError : public std::runtime_error {
 public:
  ParseError(const std::string& what, int line, int column)
      : std::runtime_error("line " + std::to_string(line) + ", column " + std::to_string(column) + ": " + what),
        line_(line),
        column_(column) {}
  int line() const { return line_; }
  int column() const { return column_; }

 private:
  int line_;
  int column_;
};

// Value holds one of null, bool, number (double), string, array or object. Arrays and objects are
// stored behind shared pointers so that copying a large document is cheap until it is modified.
class Value {
 public:
  enum class Kind { Null, Bool, Number, String, Array, Object };

  Value() : data_(nullptr) {}
  Value(std::nullptr_t) : data_(nullptr) {}
  Value(bool b) : data_(b) {}
  Value(double d) : data_(d) {}
  Value(int i) : data_(static_cast<double>(i)) {}
  Value(const char* s) : data_(std::string(s)) {}
  Value(std::string s) : data_(std::move(s)) {}
  Value(Array a) : data_(std::make_shared<Array>(std::move(a))) {}
  Value(Object o) : data_(std::make_shared<Object>(std::move(o))) {}

  Kind kind() const { return static_cast<Kind>(data_.index()); }
  bool is_null() const { return kind() == Kind::Null; }
  bool is_bool() const { return kind() == Kind::Bool; }
  bool is_number() const { return kind() == Kind::Number; }
  bool is_string() const { return kind() == Kind::String; }
  bool is_array() const { return kind() == Kind::Array; }
  bool is_object() const { return kind() == Kind::Object; }

  bool as_bool() const { return std::get<bool>(data_); }
  double as_number() const { return std::get<double>(data_); }
  const std::string& as_string() const { return std::get<std::string>(data_); }
  const Array& as_array() const { return *std::get<std::shared_ptr<Array>>(data_); }
  const Object& as_object() const { return *std::get<std::shared_ptr<Object>>(data_); }

  // Mutable access detaches a shared array/object first (copy on write).
  Array& mutable_array() {
    auto& p = std::get<std::shared_ptr<Array>>(data_);
    if (p.use_count() > 1) p = std::make_shared<Array>(*p);
    return *p;
  }
  Object& mutable_object() {
    auto& p = std::get<std::shared_ptr<Object>>(data_);
    if (p.use_count() > 1) p = std::make_shared<Object>(*p);
    return *p;
  }

  // Object member lookup; returns nullptr when this is not an object or the key is missing.
  const Value* find(const std::string& key) const {
    if (!is_object()) return nullptr;
    const Object& o = as_object();
    auto it = o.find(key);
    return it == o.end() ? nullptr : &it->second;
  }

  friend bool operator==(const Value& a, const Value& b) {
    if (a.kind() != b.kind()) return false;
    switch (a.kind()) {
      case Kind::Null: return true;
      case Kind::Bool: return a.as_bool() == b.as_bool();
      case Kind::Number: return a.as_number() == b.as_number();
      case Kind::String: return a.as_string() == b.as_string();
      case Kind::Array: return a.as_array() == b.as_array();
      case Kind::Object: return a.as_object() == b.as_object();
    }
    return false;
  }
  friend bool operator!=(const Value& a, const Value& b) { return !(a == b); }

 private:
  std::variant<std::nullptr_t, bool, double, std::string, std::shared_ptr<Array>, std::shared_ptr<Object>> data_;
};

namespace detail {

class Parser {
 public:
  explicit Parser(const std::string& text) : text_(text) {}

  Value parse_document() {
    skip_whitespace();
    Value v = parse_value(0);
    skip_whitespace();
    if (pos_ != text_.size()) fail("unexpected characters after the document");
    return v;
  }

 private:
  static constexpr int kMaxDepth = 256;  // protects the stack against hostile input

  [[noreturn]] void fail(const std::string& what) const {
    int line = 1, column = 1;
    for (std::size_t i = 0; i < pos_ && i < text_.size(); ++i) {
      if (text_[i] == '\n') {
        ++line;
        column = 1;
      } else {
        ++column;
      }
    }
    throw ParseError(what, line, column);
  }

  bool at_end() const { return pos_ >= text_.size(); }
  char peek() const { return at_end() ? '\0' : text_[pos_]; }

  void skip_whitespace() {
    while (!at_end()) {
      char c = text_[pos_];
      if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
        ++pos_;
      } else {
        break;
      }
    }
  }

  void expect_literal(const char* word) {
    for (const char* p = word; *p; ++p) {
      if (peek() != *p) fail(std::string("invalid literal, expected '") + word + "'");
      ++pos_;
    }
  }

  Value parse_value(int depth) {
    if (depth > kMaxDepth) fail("document nested too deeply");
    switch (peek()) {
      case 'n': expect_literal("null"); return Value(nullptr);
      case 't': expect_literal("true"); return Value(true);
      case 'f': expect_literal("false"); return Value(false);
      case '"': return Value(parse_string());
      case '[': return parse_array(depth);
      case '{': return parse_object(depth);
      default:
        if (peek() == '-' || (peek() >= '0' && peek() <= '9')) return Value(parse_number());
        if (at_end()) fail("unexpected end of input");
        fail(std::string("unexpected character '") + peek() + "'");
    }
  }

  Value parse_array(int depth) {
    ++pos_;  // '['
    Array items;
    skip_whitespace();
    if (peek() == ']') {
      ++pos_;
      return Value(std::move(items));
    }
    while (true) {
      skip_whitespace();
      items.push_back(parse_value(depth + 1));
      skip_whitespace();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      if (peek() == ']') {
        ++pos_;
        return Value(std::move(items));
      }
      fail("expected ',' or ']' in array");
    }
  }

  Value parse_object(int depth) {
    ++pos_;  // '{'
    Object members;
    skip_whitespace();
    if (peek() == '}') {
      ++pos_;
      return Value(std::move(members));
    }
    while (true) {
      skip_whitespace();
      if (peek() != '"') fail("expected a string key in object");
      std::string key = parse_string();
      skip_whitespace();
      if (peek() != ':') fail("expected ':' after object key");
      ++pos_;
      skip_whitespace();
      Value v = parse_value(depth + 1);
      if (!members.emplace(key, std::move(v)).second) fail("duplicate key \"" + key + "\"");
      skip_whitespace();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      if (peek() == '}') {
        ++pos_;
        return Value(std::move(members));
      }
      fail("expected ',' or '}' in object");
    }
  }

  double parse_number() {
    std::size_t start = pos_;
    if (peek() == '-') ++pos_;
    if (peek() == '0') {
      ++pos_;
      if (peek() >= '0' && peek() <= '9') fail("leading zeros are not allowed");
    } else if (peek() >= '1' && peek() <= '9') {
      while (peek() >= '0' && peek() <= '9') ++pos_;
    } else {
      fail("expected a digit");
    }
    if (peek() == '.') {
      ++pos_;
      if (!(peek() >= '0' && peek() <= '9')) fail("expected a digit after the decimal point");
      while (peek() >= '0' && peek() <= '9') ++pos_;
    }
    if (peek() == 'e' || peek() == 'E') {
      ++pos_;
      if (peek() == '+' || peek() == '-') ++pos_;
      if (!(peek() >= '0' && peek() <= '9')) fail("expected a digit in the exponent");
      while (peek() >= '0' && peek() <= '9') ++pos_;
    }
    // strtod is locale-dependent in theory; the C locale is assumed, as in most command-line tools.
    std::string digits = text_.substr(start, pos_ - start);
    double value = std::strtod(digits.c_str(), nullptr);
    if (std::isinf(value)) fail("number out of range");
    return value;
  }

  unsigned parse_hex4() {
    unsigned code = 0;
    for (int i = 0; i < 4; ++i) {
      char c = peek();
      code <<= 4;
      if (c >= '0' && c <= '9') {
        code |= static_cast<unsigned>(c - '0');
      } else if (c >= 'a' && c <= 'f') {
        code |= static_cast<unsigned>(c - 'a' + 10);
      } else if (c >= 'A' && c <= 'F') {
        code |= static_cast<unsigned>(c - 'A' + 10);
      } else {
        fail("expected four hex digits after \\u");
      }
      ++pos_;
    }
    return code;
  }

  static void append_utf8(std::string& out, std::uint32_t cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xC0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xE0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }

  std::string parse_string() {
    ++pos_;  // opening quote
    std::string out;
    while (true) {
      if (at_end()) fail("unterminated string");
      char c = text_[pos_++];
      if (c == '"') return out;
      if (static_cast<unsigned char>(c) < 0x20) fail("control character in string");
      if (c != '\\') {
        out += c;
        continue;
      }
      char e = peek();
      ++pos_;
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          std::uint32_t cp = parse_hex4();
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            // A high surrogate must be followed by an escaped low surrogate.
            if (peek() != '\\') fail("unpaired surrogate");
            ++pos_;
            if (peek() != 'u') fail("unpaired surrogate");
            ++pos_;
            std::uint32_t low = parse_hex4();
            if (low < 0xDC00 || low > 0xDFFF) fail("invalid low surrogate");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
          } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
            fail("unpaired low surrogate");
          }
          append_utf8(out, cp);
          break;
        }
        default: fail("invalid escape sequence");
      }
    }
  }

  const std::string& text_;
  std::size_t pos_ = 0;
};

void write_string(std::ostream& os, const std::string& s) {
  os << '"';
  for (unsigned char c : s) {
    switch (c) {
      case '"': os << "\\\""; break;
      case '\\': os << "\\\\"; break;
      case '\n': os << "\\n"; break;
      case '\r': os << "\\r"; break;
      case '\t': os << "\\t"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          os << buf;
        } else {
          os << static_cast<char>(c);
        }
    }
  }
  os << '"';
}

void write_number(std::ostream& os, double d) {
  // Integers print without a fraction; everything else with enough digits to round-trip.
  if (std::floor(d) == d && std::fabs(d) < 1e15) {
    os << static_cast<long long>(d);
    return;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.17g", d);
  os << buf;
}

void write_value(std::ostream& os, const Value& v, int indent, int level) {
  auto newline = [&](int lvl) {
    if (indent <= 0) return;
    os << '\n' << std::string(static_cast<std::size_t>(indent * lvl), ' ');
  };
  switch (v.kind()) {
    case Value::Kind::Null: os << "null"; break;
    case Value::Kind::Bool: os << (v.as_bool() ? "true" : "false"); break;
    case Value::Kind::Number: write_number(os, v.as_number()); break;
    case Value::Kind::String: write_string(os, v.as_string()); break;
    case Value::Kind::Array: {
      const Array& a = v.as_array();
      if (a.empty()) {
        os << "[]";
        break;
      }
      os << '[';
      for (std::size_t i = 0; i < a.size(); ++i) {
        if (i) os << ',';
        newline(level + 1);
        write_value(os, a[i], indent, level + 1);
      }
      newline(level);
      os << ']';
      break;
    }
    case Value::Kind::Object: {
      const Object& o = v.as_object();
      if (o.empty()) {
        os << "{}";
        break;
      }
      os << '{';
      bool first = true;
      for (const auto& [key, member] : o) {
        if (!first) os << ',';
        first = false;
        newline(level + 1);
        write_string(os, key);
        os << (indent > 0 ? ": " : ":");
        write_value(os, member, indent, level + 1);
      }
      newline(level);
      os << '}';
      break;
    }
  }
}

}  // namespace detail

inline Value parse(const std::string& text) { return detail::Parser(text).parse_document(); }

// Serialises `v`; indent = 0 gives the compact form, indent > 0 pretty-prints with that many spaces.
inline std::string dump(const Value& v, int indent = 0) {
  std::ostringstream os;
  detail::write_value(os, v, indent, 0);
  return os.str();
}

}  // namespace mini_json

// ---- self-tests -----------------------------------------------------------------------------------

namespace {

int g_failures = 0;

void check(bool ok, const char* what) {
  if (!ok) {
    std::cerr << "FAILED: " << what << "\n";
    ++g_failures;
  }
}

void expect_error(const std::string& text, int line, int column) {
  try {
    mini_json::parse(text);
    std::cerr << "FAILED: expected a parse error for: " << text << "\n";
    ++g_failures;
  } catch (const mini_json::ParseError& e) {
    if (e.line() != line || e.column() != column) {
      std::cerr << "FAILED: wrong position for '" << text << "': " << e.what() << "\n";
      ++g_failures;
    }
  }
}

void test_round_trip() {
  const std::string doc = R"({"name": "adapter", "rank": 16, "alpha": 32.5, "targets": ["q_proj", "v_proj"],
                              "dropout": null, "merged": false, "nested": {"empty": [], "obj": {}}})";
  mini_json::Value v = mini_json::parse(doc);
  check(v.find("rank")->as_number() == 16, "rank is 16");
  check(v.find("targets")->as_array().size() == 2, "two targets");
  check(v.find("dropout")->is_null(), "dropout is null");
  check(mini_json::parse(mini_json::dump(v)) == v, "compact round trip");
  check(mini_json::parse(mini_json::dump(v, 2)) == v, "pretty round trip");
  check(mini_json::dump(mini_json::parse("[1,2.5,-3e2]")) == "[1,2.5,-300]", "number formatting");
}

void test_strings() {
  mini_json::Value v = mini_json::parse(R"(["a\"b", "tab\there", "\u00e9", "\ud83d\ude00", "\/"])");
  const mini_json::Array& a = v.as_array();
  check(a[0].as_string() == "a\"b", "escaped quote");
  check(a[1].as_string() == "tab\there", "escaped tab");
  check(a[2].as_string() == "\xC3\xA9", "two-byte UTF-8");
  check(a[3].as_string() == "\xF0\x9F\x98\x80", "surrogate pair");
  check(a[4].as_string() == "/", "escaped slash");
  check(mini_json::dump(mini_json::Value("line\nbreak")) == "\"line\\nbreak\"", "newline is escaped");
}

void test_errors() {
  expect_error("", 1, 1);
  expect_error("[1, 2,]", 1, 7);
  expect_error("{\"a\": 1,\n \"a\": 2}", 2, 8);
  expect_error("[01]", 1, 3);
  expect_error("\"abc", 1, 5);
  expect_error("tru", 1, 4);
  expect_error("[\"\\ud800\"]", 1, 9);
  expect_error("{} x", 1, 4);
  std::string deep(1000, '[');
  try {
    mini_json::parse(deep);
    check(false, "deep nesting must fail");
  } catch (const mini_json::ParseError& e) {
    check(std::string(e.what()).find("too deeply") != std::string::npos, "depth limit message");
  }
}

void test_copy_on_write() {
  mini_json::Value a = mini_json::parse("[1, 2, 3]");
  mini_json::Value b = a;
  b.mutable_array().push_back(mini_json::Value(4));
  check(a.as_array().size() == 3, "original unchanged after copy is modified");
  check(b.as_array().size() == 4, "copy modified");
}

}  // namespace

int main() {
  test_round_trip();
  test_strings();
  test_errors();
  test_copy_on_write();
  if (g_failures == 0) {
    std::cout << "all json tests passed\n";
    return 0;
  }
  std::cout << g_failures << " failure(s)\n";
  return 1;
}
