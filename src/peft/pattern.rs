//! PEFT's name matching: which modules a config targets, and which
//! `rank_pattern` / `alpha_pattern` key applies to a module.
//!
//! The rules are PEFT's own (huggingface/peft, `src/peft/utils/other.py`,
//! `get_pattern_key`; `src/peft/tuners/tuners_utils.py`,
//! `check_target_module_exists`; used by `LoraModel._create_and_replace` in
//! `src/peft/tuners/lora/model.py`):
//!
//! - pattern keys are tried in the order the JSON object lists them; the first
//!   key `key` for which `re.match(rf"(.*\.)?({key})$", module)` matches wins.
//!   The key is a regular expression, unescaped, anchored at the end of the
//!   module name and at a `.` boundary (or the whole name): `q_proj` matches
//!   `model.layers.0.self_attn.q_proj` but not `model.layers.0.self_attn.xq_proj`,
//!   and `layers.0.self_attn.q_proj` matches only layer 0's;
//! - `target_modules` as a string is a regular expression the whole module
//!   name must match (`re.fullmatch`); as a list, a module is targeted when its
//!   name equals an entry or ends with `.` + the entry; `"all-linear"` targets
//!   every linear layer. `exclude_modules` follows the same two forms.

use regex::Regex;

/// A `rank_pattern` or `alpha_pattern` key, compiled as PEFT matches it.
#[derive(Clone, Debug)]
pub struct PatternKey {
    key: String,
    regex: Regex,
}

impl PatternKey {
    /// Compiles `key` as `^(?:.*\.)?(?:key)$` (PEFT's `(.*\.)?({key})$`
    /// under `re.match`, which anchors the start).
    ///
    /// # Errors
    /// The regex crate's message when `key` is not an expression it accepts
    /// (e.g. a look-around, which Python's `re` has and it does not).
    pub fn new(key: &str) -> std::result::Result<Self, String> {
        let regex = Regex::new(&format!(r"^(?:.*\.)?(?:{key})$")).map_err(|e| e.to_string())?;
        Ok(PatternKey { key: key.to_owned(), regex })
    }

    /// The key as the config spells it.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Whether this key applies to `module`.
    pub fn matches(&self, module: &str) -> bool {
        self.regex.is_match(module)
    }
}

/// The value of the first key (in the config's order) that applies to
/// `module`, as PEFT's `get_pattern_key` followed by `pattern.get(key, default)`.
pub fn pattern_value<'p, V>(patterns: &'p [(PatternKey, V)], module: &str) -> Option<&'p V> {
    patterns.iter().find(|(key, _)| key.matches(module)).map(|(_, value)| value)
}

/// A `target_modules` or `exclude_modules` entry of the config.
#[derive(Clone, Debug)]
pub enum ModuleSelector {
    /// No selection given (`null`).
    Nothing,
    /// `"all-linear"`: every linear layer (the file's tensors say which).
    AllLinear,
    /// A list of names, each matching a module equal to it or ending in `.name`.
    Names(Vec<String>),
    /// A regular expression the whole module name must match.
    Regex(Regex),
}

impl ModuleSelector {
    /// The selector a JSON string gives (`"all-linear"` or a regular
    /// expression, anchored at both ends as `re.fullmatch` is).
    ///
    /// # Errors
    /// The regex crate's message for an expression it does not accept.
    pub fn from_regex(text: &str) -> std::result::Result<Self, String> {
        if text == "all-linear" {
            return Ok(ModuleSelector::AllLinear);
        }
        Regex::new(&format!("^(?:{text})$")).map(ModuleSelector::Regex).map_err(|e| e.to_string())
    }

    /// Whether `module` is selected (`Nothing` selects nothing; `AllLinear`
    /// everything, since the file holds only the linear layers PEFT chose).
    pub fn selects(&self, module: &str) -> bool {
        match self {
            ModuleSelector::Nothing => false,
            ModuleSelector::AllLinear => true,
            ModuleSelector::Names(names) => names.iter().any(|name| {
                module == name
                    || (module.len() > name.len() && module.ends_with(name.as_str()) && {
                        let dot = module.len() - name.len() - 1;
                        module.as_bytes()[dot] == b'.'
                    })
            }),
            ModuleSelector::Regex(regex) => regex.is_match(module),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_keys_match_at_a_dot_boundary_or_the_whole_name() {
        let key = PatternKey::new("q_proj").unwrap();
        assert!(key.matches("model.layers.0.self_attn.q_proj"));
        assert!(key.matches("q_proj"));
        assert!(!key.matches("model.layers.0.self_attn.xq_proj"));
        assert!(!key.matches("model.layers.0.self_attn.q_proj.base_layer"));
        // The key is a regular expression, unescaped, as in PEFT.
        let key = PatternKey::new(r"layers\.[01]\.mlp\..*_proj").unwrap();
        assert!(key.matches("model.layers.1.mlp.up_proj"));
        assert!(!key.matches("model.layers.2.mlp.up_proj"));
        // An alternation stays inside the key's group.
        let key = PatternKey::new("q_proj|v_proj").unwrap();
        assert!(key.matches("a.v_proj") && !key.matches("a.v_proj.x"));
        assert!(PatternKey::new("(?<=x)q").is_err(), "look-behind is Python-only");
    }

    #[test]
    fn the_first_key_in_order_wins() {
        let patterns = vec![(PatternKey::new("q_proj").unwrap(), 2), (PatternKey::new("layers.1.q_proj").unwrap(), 4)];
        assert_eq!(pattern_value(&patterns, "m.layers.1.q_proj"), Some(&2));
        assert_eq!(pattern_value(&patterns[1..], "m.layers.1.q_proj"), Some(&4));
        assert_eq!(pattern_value(&patterns, "m.layers.1.k_proj"), None);
    }

    #[test]
    fn selectors_follow_peft_target_rules() {
        let names = ModuleSelector::Names(vec!["q_proj".into(), "layers.1.mlp".into()]);
        assert!(names.selects("q_proj") && names.selects("m.layers.0.q_proj") && names.selects("m.layers.1.mlp"));
        assert!(!names.selects("m.layers.0.xq_proj") && !names.selects("m.layers.0.mlp") && !names.selects("q_proj.x"));
        // A string is a full match, not a search.
        let regex = ModuleSelector::from_regex(r".*\.(q|v)_proj").unwrap();
        assert!(regex.selects("m.layers.0.v_proj") && !regex.selects("m.layers.0.v_proj2"));
        assert!(matches!(ModuleSelector::from_regex("all-linear"), Ok(ModuleSelector::AllLinear)));
        assert!(!ModuleSelector::Nothing.selects("q_proj"));
    }
}
