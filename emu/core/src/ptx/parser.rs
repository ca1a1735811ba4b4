//! Tokens → syntax tree: module-scope variables and functions, each function
//! a list of statements (labels, declarations, instructions, `{`/`}` scopes).
//! No semantics here beyond the shape of the text; `lower` checks meaning.

use super::lexer::{Tok, Token};
use crate::ptx::info::LoadError;
use crate::types::ScalarType;

/// The state space of a variable declaration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum VarSpace {
    Global,
    Const,
    Shared,
    Local,
    Param,
}

/// An operand as written.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Operand {
    /// A register, special register, variable or label name.
    Name(String),
    /// `!%p`
    Not(String),
    /// Integer immediate (negative numbers as two's complement bits).
    Int(u64),
    F32(u32),
    F64(u64),
    /// `[base+off]`, `[base]`, `[off]`.
    Addr {
        base: Option<String>,
        off: i64,
    },
    /// `{%r1, %r2}`
    Vec(Vec<Operand>),
    /// `%r1|%p1`: a value and a predicate destination.
    Pair(String, String),
    /// `_`
    Sink,
    /// `(a, b)`: the return and argument lists of `call`.
    List(Vec<Operand>),
}

#[derive(Clone, Debug)]
pub(crate) struct Instr {
    pub line: u32,
    /// `@%p` (false) or `@!%p` (true).
    pub guard: Option<(String, bool)>,
    pub opcode: String,
    pub operands: Vec<Operand>,
}

#[derive(Clone, Debug)]
pub(crate) struct VarDecl {
    pub line: u32,
    pub space: VarSpace,
    pub align: u32,
    pub ty: ScalarType,
    /// Elements in a vector type (`.v4 .f32` → 4), else 1.
    pub vec: u32,
    pub name: String,
    /// Product of the array dimensions; `None` for `[]` (extern shared).
    pub count: Option<u64>,
    pub init: Vec<Operand>,
    pub is_extern: bool,
}

impl VarDecl {
    pub fn size_bytes(&self) -> u64 {
        self.count.unwrap_or(0).saturating_mul(self.ty.size_bytes() as u64 * self.vec as u64)
    }
}

#[derive(Clone, Debug)]
pub(crate) enum Stmt {
    Label(u32, String),
    /// `name: .branchtargets L0, L1, ...;` — the target list of `brx.idx`.
    BranchTargets {
        line: u32,
        name: String,
        labels: Vec<String>,
    },
    Instr(Instr),
    /// `.reg .type name<N>` (count Some(N)) or `.reg .type name` (None).
    Reg {
        ty: ScalarType,
        names: Vec<(String, Option<u32>)>,
    },
    Var(VarDecl),
    ScopeOpen,
    ScopeClose,
}

#[derive(Clone, Debug)]
pub(crate) struct Func {
    pub line: u32,
    pub name: String,
    pub is_entry: bool,
    pub params: Vec<VarDecl>,
    /// Return parameters of a `.func`.
    pub rets: Vec<VarDecl>,
    /// `None` for a prototype without body.
    pub body: Option<Vec<Stmt>>,
    pub maxntid: Option<u32>,
    /// From `.reqnctapercluster` if present (the cluster's CTAs per dimension).
    pub cluster_dims: Option<[u32; 3]>,
}

#[derive(Debug, Default)]
pub(crate) struct PtxModule {
    pub vars: Vec<VarDecl>,
    pub funcs: Vec<Func>,
}

struct P<'a> {
    t: &'a [Token],
    i: usize,
}

fn e(line: u32, m: impl Into<String>) -> LoadError {
    LoadError { line, message: m.into() }
}

impl<'a> P<'a> {
    fn line(&self) -> u32 {
        self.t.get(self.i).or(self.t.last()).map_or(0, |t| t.line)
    }
    fn peek(&self) -> Option<&'a Tok> {
        self.t.get(self.i).map(|t| &t.tok)
    }
    fn peek_at(&self, k: usize) -> Option<&'a Tok> {
        self.t.get(self.i + k).map(|t| &t.tok)
    }
    fn next(&mut self) -> Result<&'a Tok, LoadError> {
        let line = self.line();
        let t = self.t.get(self.i).ok_or_else(|| e(line, "unexpected end of PTX"))?;
        self.i += 1;
        Ok(&t.tok)
    }
    fn is_punct(&self, c: char) -> bool {
        self.peek() == Some(&Tok::Punct(c))
    }
    fn eat_punct(&mut self, c: char) -> bool {
        let yes = self.is_punct(c);
        if yes {
            self.i += 1;
        }
        yes
    }
    fn expect_punct(&mut self, c: char) -> Result<(), LoadError> {
        let line = self.line();
        if self.eat_punct(c) {
            Ok(())
        } else {
            Err(e(line, format!("expected `{c}`, found {:?}", self.peek())))
        }
    }
    fn ident(&mut self) -> Result<&'a str, LoadError> {
        let line = self.line();
        match self.next()? {
            Tok::Ident(s) => Ok(s),
            t => Err(e(line, format!("expected a name, found {t:?}"))),
        }
    }
    fn int(&mut self) -> Result<u64, LoadError> {
        let line = self.line();
        match self.next()? {
            Tok::Int(v) => Ok(*v),
            t => Err(e(line, format!("expected an integer, found {t:?}"))),
        }
    }
    fn peek_ident(&self) -> Option<&'a str> {
        match self.peek() {
            Some(Tok::Ident(s)) => Some(s),
            _ => None,
        }
    }
    /// Skips to just past the next `;` (for directives with no meaning here).
    fn skip_statement(&mut self) -> Result<(), LoadError> {
        while !self.eat_punct(';') {
            self.next()?;
        }
        Ok(())
    }
    /// Skips a balanced `{ ... }` block (debug sections).
    fn skip_block(&mut self) -> Result<(), LoadError> {
        self.expect_punct('{')?;
        let mut depth = 1;
        while depth > 0 {
            match self.next()? {
                Tok::Punct('{') => depth += 1,
                Tok::Punct('}') => depth -= 1,
                _ => {}
            }
        }
        Ok(())
    }
}

pub(crate) fn parse(tokens: &[Token]) -> Result<PtxModule, LoadError> {
    let mut p = P { t: tokens, i: 0 };
    let mut m = PtxModule::default();
    while p.peek().is_some() {
        let line = p.line();
        let word = p.ident()?;
        match word {
            ".version" => {
                p.next()?;
            }
            ".target" => {
                p.ident()?;
                while p.eat_punct(',') {
                    p.ident()?;
                }
            }
            ".address_size" => {
                let bits = p.int()?;
                if bits != 64 {
                    return Err(e(line, format!(".address_size {bits} is not supported (only 64)")));
                }
            }
            ".section" => {
                p.ident()?;
                p.skip_block()?;
            }
            ".pragma" => p.skip_statement()?,
            _ => parse_toplevel_decl(&mut p, &mut m, word, line)?,
        }
    }
    Ok(m)
}

fn parse_toplevel_decl(p: &mut P, m: &mut PtxModule, first: &str, line: u32) -> Result<(), LoadError> {
    let mut word = first;
    let mut is_extern = false;
    loop {
        match word {
            ".visible" | ".weak" | ".common" => {}
            ".extern" => is_extern = true,
            _ => break,
        }
        word = p.ident()?;
    }
    match word {
        ".entry" | ".func" => {
            let f = parse_func(p, word == ".entry", line)?;
            m.funcs.push(f);
            Ok(())
        }
        ".global" | ".const" | ".shared" | ".local" => {
            let v = parse_var(p, word, is_extern, line)?;
            m.vars.push(v);
            Ok(())
        }
        _ => Err(e(line, format!("unsupported directive `{word}`"))),
    }
}

fn space_of(word: &str) -> Option<VarSpace> {
    Some(match word {
        ".global" => VarSpace::Global,
        ".const" => VarSpace::Const,
        ".shared" => VarSpace::Shared,
        ".local" => VarSpace::Local,
        ".param" => VarSpace::Param,
        _ => return None,
    })
}

/// After the space word: `[.align N] [.ptr .space .align N] [.vN] .type name[dims] [= init]`
/// (no trailing `;` consumed).
fn parse_var_rest(p: &mut P, space_word: &str, is_extern: bool, line: u32) -> Result<VarDecl, LoadError> {
    let space = space_of(space_word).ok_or_else(|| e(line, format!("unknown state space `{space_word}`")))?;
    let mut align = 0;
    let mut vec = 1;
    let mut ty = None;
    let name;
    loop {
        let w = p.ident()?;
        match w {
            ".align" => align = p.int()? as u32,
            ".ptr" | ".global" | ".shared" | ".const" | ".local" => {}
            ".v2" => vec = 2,
            ".v4" => vec = 4,
            ".v8" => vec = 8,
            _ if w.starts_with('.') => {
                ty = Some(ScalarType::from_suffix(&w[1..]).ok_or_else(|| e(line, format!("unknown type `{w}`")))?);
            }
            _ => {
                name = w.to_string();
                break;
            }
        }
    }
    let ty = ty.ok_or_else(|| e(line, format!("variable `{name}` has no type")))?;
    let mut count = Some(1u64);
    let mut is_array = false;
    while p.eat_punct('[') {
        is_array = true;
        if p.eat_punct(']') {
            count = None;
            continue;
        }
        let n = p.int()?;
        p.expect_punct(']')?;
        count = count.and_then(|c| c.checked_mul(n));
        if count.is_none() {
            return Err(e(line, format!("array `{name}` is too large")));
        }
    }
    let mut init = Vec::new();
    if p.eat_punct('=') {
        parse_init(p, &mut init)?;
        if is_array && count.is_none() {
            count = Some(init.len() as u64);
        }
    }
    if align == 0 {
        align = ty.size_bytes() * vec;
    }
    Ok(VarDecl { line, space, align, ty, vec, name, count, init, is_extern })
}

fn parse_init(p: &mut P, out: &mut Vec<Operand>) -> Result<(), LoadError> {
    if p.eat_punct('{') {
        loop {
            parse_init(p, out)?;
            if p.eat_punct('}') {
                return Ok(());
            }
            p.expect_punct(',')?;
        }
    }
    out.push(parse_operand(p)?);
    Ok(())
}

fn parse_var(p: &mut P, space_word: &str, is_extern: bool, line: u32) -> Result<VarDecl, LoadError> {
    let v = parse_var_rest(p, space_word, is_extern, line)?;
    p.expect_punct(';')?;
    Ok(v)
}

fn parse_param_list(p: &mut P) -> Result<Vec<VarDecl>, LoadError> {
    let mut out = Vec::new();
    p.expect_punct('(')?;
    if p.eat_punct(')') {
        return Ok(out);
    }
    loop {
        let line = p.line();
        let w = p.ident()?;
        // `.reg` params of `.func`s are treated like `.param`s.
        let w = if w == ".reg" { ".param" } else { w };
        out.push(parse_var_rest(p, w, false, line)?);
        if p.eat_punct(')') {
            return Ok(out);
        }
        p.expect_punct(',')?;
    }
}

fn parse_func(p: &mut P, is_entry: bool, line: u32) -> Result<Func, LoadError> {
    let rets = if !is_entry && p.is_punct('(') { parse_param_list(p)? } else { Vec::new() };
    let name = p.ident()?.to_string();
    let params = if p.is_punct('(') { parse_param_list(p)? } else { Vec::new() };
    let mut maxntid = None;
    let mut cluster_dims = None;
    loop {
        match p.peek() {
            Some(Tok::Punct(';')) => {
                p.i += 1;
                return Ok(Func { line, name, is_entry, params, rets, body: None, maxntid, cluster_dims });
            }
            Some(Tok::Punct('{')) => break,
            Some(Tok::Ident(w)) => {
                p.i += 1;
                // Directives without operands.
                if matches!(w.as_str(), ".explicitcluster" | ".noreturn") {
                    continue;
                }
                let mut dims = vec![p.int()?];
                while p.eat_punct(',') {
                    dims.push(p.int()?);
                }
                match w.as_str() {
                    ".maxntid" | ".reqntid" => maxntid = Some(dims.iter().product::<u64>() as u32),
                    ".reqnctapercluster" => {
                        let dim = |i: usize| dims.get(i).map_or(Ok(1), |&d| u32::try_from(d));
                        let d = [dim(0), dim(1), dim(2)];
                        match d {
                            [Ok(x), Ok(y), Ok(z)] if dims.len() <= 3 && x.min(y).min(z) > 0 => {
                                cluster_dims = Some([x, y, z])
                            }
                            _ => return Err(e(p.line(), format!("bad `.reqnctapercluster` {dims:?}"))),
                        }
                    }
                    ".minnctapersm" | ".maxnreg" | ".maxclusterrank" => {}
                    _ => return Err(e(p.line(), format!("unsupported function directive `{w}`"))),
                }
            }
            _ => return Err(e(p.line(), format!("unexpected {:?} in the header of `{name}`", p.peek()))),
        }
    }
    p.expect_punct('{')?;
    let mut body = Vec::new();
    let mut depth = 0;
    loop {
        let line = p.line();
        match p.peek() {
            None => return Err(e(line, format!("unterminated body of `{name}`"))),
            Some(Tok::Punct('}')) => {
                p.i += 1;
                if depth == 0 {
                    break;
                }
                depth -= 1;
                body.push(Stmt::ScopeClose);
            }
            Some(Tok::Punct('{')) => {
                p.i += 1;
                depth += 1;
                body.push(Stmt::ScopeOpen);
            }
            Some(Tok::Ident(w)) if matches!(p.peek_at(1), Some(Tok::Punct(':'))) => {
                p.i += 2;
                if matches!(p.peek(), Some(Tok::Ident(d)) if d == ".branchtargets") {
                    p.i += 1;
                    let mut labels = vec![p.ident()?.to_string()];
                    while p.eat_punct(',') {
                        labels.push(p.ident()?.to_string());
                    }
                    p.expect_punct(';')?;
                    body.push(Stmt::BranchTargets { line, name: w.clone(), labels });
                } else {
                    body.push(Stmt::Label(line, w.clone()));
                }
            }
            Some(Tok::Ident(w)) if w.starts_with('.') => {
                p.i += 1;
                // Inline asm may glue the type to the directive: `.reg.b32 f, C;`.
                if let Some(ty) = w.strip_prefix(".reg.") {
                    body.push(parse_reg_typed(p, line, Some(ty))?);
                    continue;
                }
                match w.as_str() {
                    ".reg" => body.push(parse_reg(p, line)?),
                    ".pragma" => p.skip_statement()?,
                    ".shared" | ".local" | ".param" | ".global" | ".const" => {
                        body.push(Stmt::Var(parse_var(p, w, false, line)?));
                    }
                    _ => return Err(e(line, format!("unsupported directive `{w}` in a function body"))),
                }
            }
            _ => body.push(Stmt::Instr(parse_instr(p)?)),
        }
    }
    Ok(Func { line, name, is_entry, params, rets, body: Some(body), maxntid, cluster_dims })
}

fn parse_reg(p: &mut P, line: u32) -> Result<Stmt, LoadError> {
    parse_reg_typed(p, line, None)
}

/// `.reg` after its directive word; `glued` is a type suffix written onto the
/// directive itself (`.reg.b32` → `Some("b32")`).
fn parse_reg_typed(p: &mut P, line: u32, glued: Option<&str>) -> Result<Stmt, LoadError> {
    let mut words: Vec<&str> = glued.map(|g| g.split('.').collect()).unwrap_or_default();
    while let Some(w) = p.peek_ident().filter(|w| w.starts_with('.') && !w.starts_with("%")) {
        p.i += 1;
        words.extend(w[1..].split('.'));
    }
    let mut ty = None;
    for w in words {
        if w == "v2" || w == "v4" {
            return Err(e(line, "vector register declarations are not supported"));
        }
        ty = Some(ScalarType::from_suffix(w).ok_or_else(|| e(line, format!("unknown type `.{w}`")))?);
    }
    let ty = ty.ok_or_else(|| e(line, ".reg without a type"))?;
    let mut names = Vec::new();
    loop {
        let n = p.ident()?.to_string();
        let count = if p.eat_punct('<') {
            let c = p.int()? as u32;
            p.expect_punct('>')?;
            Some(c)
        } else {
            None
        };
        names.push((n, count));
        if p.eat_punct(';') {
            break;
        }
        p.expect_punct(',')?;
    }
    Ok(Stmt::Reg { ty, names })
}

fn parse_instr(p: &mut P) -> Result<Instr, LoadError> {
    let line = p.line();
    let mut guard = None;
    if p.eat_punct('@') {
        let neg = p.eat_punct('!');
        guard = Some((p.ident()?.to_string(), neg));
    }
    let opcode = p.ident()?.to_string();
    let mut operands = Vec::new();
    let mut parse_operands = || -> Result<(), LoadError> {
        if !p.eat_punct(';') {
            loop {
                operands.push(parse_operand(p)?);
                if p.eat_punct(';') {
                    break;
                }
                p.expect_punct(',')?;
            }
        }
        Ok(())
    };
    parse_operands().map_err(|e| err_in(&opcode, e))?;
    Ok(Instr { line, guard, opcode, operands })
}

/// An operand syntax error inside an instruction names the instruction
/// (most often it is one whose operand forms are not supported).
fn err_in(opcode: &str, e: LoadError) -> LoadError {
    LoadError { line: e.line, message: format!("unsupported instruction `{opcode}`: {}", e.message) }
}

fn signed_int(p: &mut P) -> Result<Option<i64>, LoadError> {
    let neg = p.eat_punct('-');
    match p.peek() {
        Some(Tok::Int(v)) => {
            p.i += 1;
            Ok(Some(if neg { (*v as i64).wrapping_neg() } else { *v as i64 }))
        }
        _ if neg => Err(e(p.line(), "expected a number after `-`")),
        _ => Ok(None),
    }
}

fn parse_operand(p: &mut P) -> Result<Operand, LoadError> {
    let line = p.line();
    if p.eat_punct('[') {
        let mut base = None;
        let mut off = 0i64;
        if let Some(n) = p.peek_ident() {
            p.i += 1;
            base = Some(n.to_string());
            if p.eat_punct('+') {
                off = signed_int(p)?.ok_or_else(|| e(line, "expected an offset after `+`"))?;
            } else if p.is_punct('-') {
                off = signed_int(p)?.unwrap_or(0);
            } else if p.eat_punct(',') {
                // `[tensorMap, {coordinates}]` of cp.async.bulk.tensor: a two-element list.
                let coords = parse_operand(p)?;
                p.expect_punct(']')?;
                return Ok(Operand::List(vec![Operand::Name(base.unwrap_or_default()), coords]));
            }
        } else {
            off = signed_int(p)?.ok_or_else(|| e(line, "malformed address"))?;
        }
        p.expect_punct(']')?;
        return Ok(Operand::Addr { base, off });
    }
    if p.eat_punct('{') {
        let mut v = Vec::new();
        loop {
            v.push(parse_operand(p)?);
            if p.eat_punct('}') {
                return Ok(Operand::Vec(v));
            }
            p.expect_punct(',')?;
        }
    }
    if p.eat_punct('!') {
        return Ok(Operand::Not(p.ident()?.to_string()));
    }
    if p.eat_punct('(') {
        let mut v = Vec::new();
        if p.eat_punct(')') {
            return Ok(Operand::List(v));
        }
        loop {
            v.push(parse_operand(p)?);
            if p.eat_punct(')') {
                return Ok(Operand::List(v));
            }
            p.expect_punct(',')?;
        }
    }
    if let Some(v) = signed_int(p)? {
        return Ok(Operand::Int(v as u64));
    }
    match p.next()? {
        Tok::F32(b) => Ok(Operand::F32(*b)),
        Tok::F64(b) => Ok(Operand::F64(*b)),
        Tok::Ident(n) => {
            if p.eat_punct('|') {
                let q = p.ident()?.to_string();
                return Ok(Operand::Pair(n.clone(), q));
            }
            if n == "_" {
                return Ok(Operand::Sink);
            }
            Ok(Operand::Name(n.clone()))
        }
        t => Err(e(line, format!("unexpected {t:?} in an operand"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ptx::lexer::tokenize;

    const SNIPPET: &str = r#"
.version 9.0
.target sm_80
.address_size 64
.global .align 4 .b32 table[3] = {1, -2, 0x10};
.extern .shared .align 16 .b8 smem[];
.visible .entry k(
    .param .u64 k_param_0,
    .param .align 8 .b8 k_param_1[368]
) .maxntid 128, 1, 1
{
    .reg .pred %p<2>;
    .reg .b32 %r<42>;
    .shared .align 4 .b8 tile[1024];
    @!%p1 bra $L__BB0_2;
    { .reg .b16 lo, hi;
      mov.b32 {lo, hi}, %r1; }
    shfl.sync.down.b32 %r15|%p1, %r10, 16, 31, -1;
    ld.global.v2.f32 {%r1, %r2}, [%rd1+-16];
    st.shared.f32 [tile+4], 0f3F800000;
$L__BB0_2:
    ret;
}
"#;

    #[test]
    fn parses_declarations_and_statements() {
        let m = parse(&tokenize(SNIPPET).unwrap()).unwrap();
        assert_eq!(m.vars.len(), 2);
        assert_eq!(m.vars[0].init, vec![Operand::Int(1), Operand::Int((-2i64) as u64), Operand::Int(16)]);
        assert_eq!(m.vars[0].size_bytes(), 12);
        assert!(m.vars[1].is_extern && m.vars[1].count.is_none());
        let f = &m.funcs[0];
        assert!(f.is_entry);
        assert_eq!(f.maxntid, Some(128));
        assert_eq!(f.params[1].size_bytes(), 368);
        assert_eq!(f.params[1].align, 8);
        let body = f.body.as_ref().unwrap();
        let instrs: Vec<&Instr> =
            body.iter().filter_map(|s| if let Stmt::Instr(i) = s { Some(i) } else { None }).collect();
        assert_eq!(instrs[0].guard, Some(("%p1".to_string(), true)));
        assert_eq!(instrs[0].line, 15);
        assert_eq!(instrs[1].operands[0], Operand::Vec(vec![Operand::Name("lo".into()), Operand::Name("hi".into())]));
        assert_eq!(instrs[2].operands[0], Operand::Pair("%r15".into(), "%p1".into()));
        assert_eq!(instrs[2].operands[4], Operand::Int(u64::MAX));
        assert_eq!(instrs[3].operands[1], Operand::Addr { base: Some("%rd1".into()), off: -16 });
        assert_eq!(instrs[4].operands[0], Operand::Addr { base: Some("tile".into()), off: 4 });
        assert_eq!(instrs[4].operands[1], Operand::F32(0x3F80_0000));
        assert!(body.iter().any(|s| matches!(s, Stmt::Label(_, l) if l == "$L__BB0_2")));
    }
}
