//! expr_eval.rs - a calculator language: lexer, Pratt parser, and tree-walking evaluator.
//!
//! Supports numbers, variables, `let` bindings, the operators `+ - * / % ^` with the usual
//! precedence (`^` is right-associative), unary minus, parentheses, comparison operators that
//! yield 1 or 0, and a handful of built-in functions (sqrt, abs, min, max, ln, exp). Errors carry
//! the byte offset where they were detected so a REPL can point at the problem.
//!
//! Build and test:  rustc --edition 2021 --test expr_eval.rs -o expr_eval_tests && ./expr_eval_tests
//! Run the REPL:    rustc --edition 2021 expr_eval.rs && ./expr_eval

use std::collections::HashMap;
use std::fmt;
use std::io::{self, BufRead, Write};

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Number(f64),
    Ident(String),
    Op(char),
    Compare(&'static str),
    LParen,
    RParen,
    Comma,
    Let,
    Assign,
    End,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Error {
    pub offset: usize,
    pub message: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at offset {}: {}", self.offset, self.message)
    }
}

fn error<T>(offset: usize, message: impl Into<String>) -> Result<T, Error> {
    Err(Error { offset, message: message.into() })
}

/// Splits the input into tokens, each paired with its starting byte offset.
fn lex(src: &str) -> Result<Vec<(Token, usize)>, Error> {
    let bytes = src.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i] as char;
        let start = i;
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if c.is_ascii_digit() || (c == '.' && i + 1 < bytes.len() && (bytes[i + 1] as char).is_ascii_digit()) {
            while i < bytes.len() && ((bytes[i] as char).is_ascii_digit() || bytes[i] == b'.') {
                i += 1;
            }
            // Optional exponent: 1e-3, 2.5E10
            if i < bytes.len() && (bytes[i] == b'e' || bytes[i] == b'E') {
                let mut j = i + 1;
                if j < bytes.len() && (bytes[j] == b'+' || bytes[j] == b'-') {
                    j += 1;
                }
                if j < bytes.len() && (bytes[j] as char).is_ascii_digit() {
                    i = j;
                    while i < bytes.len() && (bytes[i] as char).is_ascii_digit() {
                        i += 1;
                    }
                }
            }
            let text = &src[start..i];
            match text.parse::<f64>() {
                Ok(v) => tokens.push((Token::Number(v), start)),
                Err(_) => return error(start, format!("malformed number '{}'", text)),
            }
            continue;
        }
        if c.is_ascii_alphabetic() || c == '_' {
            while i < bytes.len() && ((bytes[i] as char).is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            let word = &src[start..i];
            tokens.push((if word == "let" { Token::Let } else { Token::Ident(word.to_string()) }, start));
            continue;
        }
        let two = if i + 1 < bytes.len() { &src[i..i + 2] } else { "" };
        let compare = match two {
            "==" => Some("=="),
            "!=" => Some("!="),
            "<=" => Some("<="),
            ">=" => Some(">="),
            _ => None,
        };
        if let Some(op) = compare {
            tokens.push((Token::Compare(op), start));
            i += 2;
            continue;
        }
        let token = match c {
            '+' | '-' | '*' | '/' | '%' | '^' => Token::Op(c),
            '<' => Token::Compare("<"),
            '>' => Token::Compare(">"),
            '(' => Token::LParen,
            ')' => Token::RParen,
            ',' => Token::Comma,
            '=' => Token::Assign,
            _ => return error(start, format!("unexpected character '{}'", c)),
        };
        tokens.push((token, start));
        i += 1;
    }
    tokens.push((Token::End, src.len()));
    Ok(tokens)
}

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Number(f64),
    Var(String, usize),
    Neg(Box<Expr>),
    Binary(char, Box<Expr>, Box<Expr>),
    Compare(&'static str, Box<Expr>, Box<Expr>),
    Call(String, Vec<Expr>, usize),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Statement {
    Let(String, Expr),
    Expr(Expr),
}

struct Parser {
    tokens: Vec<(Token, usize)>,
    pos: usize,
}

/// Binding powers: (left, right). Right-associative operators have right < left.
fn infix_power(tok: &Token) -> Option<(u8, u8)> {
    match tok {
        Token::Compare(_) => Some((1, 2)),
        Token::Op('+') | Token::Op('-') => Some((3, 4)),
        Token::Op('*') | Token::Op('/') | Token::Op('%') => Some((5, 6)),
        Token::Op('^') => Some((8, 7)),
        _ => None,
    }
}

const PREFIX_MINUS_POWER: u8 = 7; // binds tighter than * but looser than ^: -2^2 == -4

impl Parser {
    fn peek(&self) -> &Token {
        &self.tokens[self.pos].0
    }
    fn offset(&self) -> usize {
        self.tokens[self.pos].1
    }
    fn advance(&mut self) -> (Token, usize) {
        let t = self.tokens[self.pos].clone();
        if self.pos + 1 < self.tokens.len() {
            self.pos += 1;
        }
        t
    }
    fn expect(&mut self, want: Token, what: &str) -> Result<(), Error> {
        if *self.peek() == want {
            self.advance();
            Ok(())
        } else {
            error(self.offset(), format!("expected {}", what))
        }
    }

    fn statement(&mut self) -> Result<Statement, Error> {
        let stmt = if *self.peek() == Token::Let {
            self.advance();
            let name = match self.advance() {
                (Token::Ident(name), _) => name,
                (_, at) => return error(at, "expected a variable name after 'let'"),
            };
            self.expect(Token::Assign, "'=' after the variable name")?;
            Statement::Let(name, self.expr(0)?)
        } else {
            Statement::Expr(self.expr(0)?)
        };
        if *self.peek() != Token::End {
            return error(self.offset(), "unexpected input after the expression");
        }
        Ok(stmt)
    }

    fn expr(&mut self, min_power: u8) -> Result<Expr, Error> {
        let mut lhs = self.prefix()?;
        loop {
            let tok = self.peek().clone();
            let Some((left, right)) = infix_power(&tok) else { break };
            if left < min_power {
                break;
            }
            self.advance();
            let rhs = self.expr(right)?;
            lhs = match tok {
                Token::Op(op) => Expr::Binary(op, Box::new(lhs), Box::new(rhs)),
                Token::Compare(op) => Expr::Compare(op, Box::new(lhs), Box::new(rhs)),
                _ => unreachable!("infix_power only accepts operators"),
            };
        }
        Ok(lhs)
    }

    fn prefix(&mut self) -> Result<Expr, Error> {
        match self.advance() {
            (Token::Number(v), _) => Ok(Expr::Number(v)),
            (Token::Op('-'), _) => Ok(Expr::Neg(Box::new(self.expr(PREFIX_MINUS_POWER)?))),
            (Token::LParen, _) => {
                let inner = self.expr(0)?;
                self.expect(Token::RParen, "')'")?;
                Ok(inner)
            }
            (Token::Ident(name), at) => {
                if *self.peek() != Token::LParen {
                    return Ok(Expr::Var(name, at));
                }
                self.advance();
                let mut args = Vec::new();
                if *self.peek() != Token::RParen {
                    loop {
                        args.push(self.expr(0)?);
                        if *self.peek() == Token::Comma {
                            self.advance();
                        } else {
                            break;
                        }
                    }
                }
                self.expect(Token::RParen, "')' after the arguments")?;
                Ok(Expr::Call(name, args, at))
            }
            (Token::End, at) => error(at, "unexpected end of input"),
            (_, at) => error(at, "expected a number, variable, '(' or '-'"),
        }
    }
}

pub fn parse(src: &str) -> Result<Statement, Error> {
    let mut p = Parser { tokens: lex(src)?, pos: 0 };
    p.statement()
}

#[derive(Default)]
pub struct Env {
    vars: HashMap<String, f64>,
}

impl Env {
    pub fn new() -> Self {
        let mut env = Env::default();
        env.vars.insert("pi".into(), std::f64::consts::PI);
        env.vars.insert("e".into(), std::f64::consts::E);
        env
    }

    pub fn eval(&self, e: &Expr) -> Result<f64, Error> {
        Ok(match e {
            Expr::Number(v) => *v,
            Expr::Var(name, at) => match self.vars.get(name) {
                Some(v) => *v,
                None => return error(*at, format!("unknown variable '{}'", name)),
            },
            Expr::Neg(inner) => -self.eval(inner)?,
            Expr::Binary(op, a, b) => {
                let (x, y) = (self.eval(a)?, self.eval(b)?);
                match op {
                    '+' => x + y,
                    '-' => x - y,
                    '*' => x * y,
                    '/' => x / y,
                    '%' => x % y,
                    '^' => x.powf(y),
                    _ => unreachable!(),
                }
            }
            Expr::Compare(op, a, b) => {
                let (x, y) = (self.eval(a)?, self.eval(b)?);
                let truth = match *op {
                    "==" => x == y,
                    "!=" => x != y,
                    "<" => x < y,
                    "<=" => x <= y,
                    ">" => x > y,
                    ">=" => x >= y,
                    _ => unreachable!(),
                };
                if truth { 1.0 } else { 0.0 }
            }
            Expr::Call(name, args, at) => {
                let values: Result<Vec<f64>, Error> = args.iter().map(|a| self.eval(a)).collect();
                let v = values?;
                let arity = |n: usize| -> Result<(), Error> {
                    if v.len() == n {
                        Ok(())
                    } else {
                        error(*at, format!("{}() takes {} argument(s), got {}", name, n, v.len()))
                    }
                };
                match name.as_str() {
                    "sqrt" => { arity(1)?; v[0].sqrt() }
                    "abs" => { arity(1)?; v[0].abs() }
                    "ln" => { arity(1)?; v[0].ln() }
                    "exp" => { arity(1)?; v[0].exp() }
                    "min" | "max" if !v.is_empty() => {
                        let init = v[0];
                        v.iter().skip(1).fold(init, |acc, &x| if name == "min" { acc.min(x) } else { acc.max(x) })
                    }
                    "min" | "max" => return error(*at, format!("{}() needs at least one argument", name)),
                    _ => return error(*at, format!("unknown function '{}'", name)),
                }
            }
        })
    }

    /// Parses and runs one line; `let` stores the value and also returns it.
    pub fn run(&mut self, line: &str) -> Result<f64, Error> {
        match parse(line)? {
            Statement::Let(name, e) => {
                let v = self.eval(&e)?;
                self.vars.insert(name, v);
                Ok(v)
            }
            Statement::Expr(e) => self.eval(&e),
        }
    }
}

#[allow(dead_code)]
fn main() {
    let mut env = Env::new();
    let stdin = io::stdin();
    print!("> ");
    io::stdout().flush().ok();
    for line in stdin.lock().lines() {
        let line = line.expect("failed to read stdin");
        if !line.trim().is_empty() {
            match env.run(&line) {
                Ok(v) => println!("{}", v),
                Err(e) => {
                    println!("{}^", " ".repeat(e.offset + 2));
                    println!("error: {}", e);
                }
            }
        }
        print!("> ");
        io::stdout().flush().ok();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(src: &str) -> f64 {
        Env::new().run(src).unwrap_or_else(|e| panic!("{}: {}", src, e))
    }

    #[test]
    fn precedence_and_associativity() {
        assert_eq!(eval("1 + 2 * 3"), 7.0);
        assert_eq!(eval("(1 + 2) * 3"), 9.0);
        assert_eq!(eval("2 ^ 3 ^ 2"), 512.0);
        assert_eq!(eval("-2 ^ 2"), -4.0);
        assert_eq!(eval("10 - 4 - 3"), 3.0);
        assert_eq!(eval("7 % 4 * 2"), 6.0);
    }

    #[test]
    fn numbers_and_functions() {
        assert_eq!(eval("1.5e2 + .5"), 150.5);
        assert_eq!(eval("max(1, 9, 4) - min(3, -2)"), 11.0);
        assert!((eval("sqrt(2) ^ 2") - 2.0).abs() < 1e-12);
        assert!((eval("ln(exp(3))") - 3.0).abs() < 1e-12);
        assert_eq!(eval("abs(-pi) == pi"), 1.0);
    }

    #[test]
    fn comparisons_yield_numbers() {
        assert_eq!(eval("3 < 4"), 1.0);
        assert_eq!(eval("3 >= 4"), 0.0);
        assert_eq!(eval("1 + 1 == 2"), 1.0);
    }

    #[test]
    fn let_bindings_persist() {
        let mut env = Env::new();
        assert_eq!(env.run("let r = 2").unwrap(), 2.0);
        assert_eq!(env.run("let area = pi * r ^ 2").unwrap(), std::f64::consts::PI * 4.0);
        assert_eq!(env.run("area / pi").unwrap(), 4.0);
    }

    #[test]
    fn errors_point_at_the_problem() {
        let mut env = Env::new();
        assert_eq!(env.run("1 + $").unwrap_err().offset, 4);
        assert_eq!(env.run("2 * (3 + 4").unwrap_err().message, "expected ')'");
        assert_eq!(env.run("foo + 1").unwrap_err().message, "unknown variable 'foo'");
        assert_eq!(env.run("sqrt(1, 2)").unwrap_err().message, "sqrt() takes 1 argument(s), got 2");
        assert_eq!(env.run("let 3 = 4").unwrap_err().offset, 4);
        assert_eq!(env.run("1 2").unwrap_err().message, "unexpected input after the expression");
        assert!(env.run("").is_err());
    }
}
