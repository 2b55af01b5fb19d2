//! "Did you mean": the closest of the names a user could have meant, for messages about a name
//! that is not there (an environment, a phase).

/// ` Did you mean "<name>"?` for the candidate most like `input` (Jaro-Winkler similarity above
/// 0.8), or nothing when none is close. To be appended to a message that ends a sentence.
pub fn did_you_mean<'a>(input: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    candidates
        .into_iter()
        .filter(|c| *c != input)
        .map(|c| (strsim::jaro_winkler(input, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| format!(" Did you mean \"{c}\"?"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::did_you_mean;

    #[test]
    fn the_closest_name_is_offered_and_a_far_one_is_not() {
        let envs = ["prod", "staging", "local"];
        assert_eq!(did_you_mean("prdo", envs), " Did you mean \"prod\"?");
        assert_eq!(did_you_mean("stagin", envs), " Did you mean \"staging\"?");
        assert_eq!(did_you_mean("qa", envs), "");
        let phases = ["build", "push", "migrate_pre", "rollout"];
        assert_eq!(did_you_mean("biuld", phases), " Did you mean \"build\"?");
        assert_eq!(did_you_mean("rollot", phases), " Did you mean \"rollout\"?");
    }
}
