//! The PTX front end: text → tokens → a syntax tree of directives and
//! statements → (in `lower`) the executable form in `ir`.

pub(crate) mod async_ir;
pub(crate) mod info;
pub(crate) mod ir;
pub(crate) mod lexer;
pub(crate) mod lower;
pub(crate) mod parser;
pub(crate) mod reg_init;
