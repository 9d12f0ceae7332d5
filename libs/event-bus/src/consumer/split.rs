//! Finding the items that fail on their own in a group that failed as a whole, for handlers
//! that write later than they receive (the lake writer's flush of one partition): the same
//! rule as the runtime's batches, halves in order, a single item that still fails for good
//! is poison.

use futures::future::BoxFuture;

use super::handler::HandlerError;

/// What [`split_failures`] found.
#[derive(Debug)]
pub struct Split<T> {
    /// Items written.
    pub committed: Vec<T>,
    /// Items that fail on their own with a permanent error, and why.
    pub poison: Vec<(T, String)>,
    /// Items not written because of a transient failure (retry them later), and why.
    pub retry: Option<(Vec<T>, String)>,
}

/// Writes `items` with `write`, splitting a group that fails permanently into halves (left
/// first) until the failing items are alone; stops at the first transient failure (the rest
/// is returned to retry).
pub async fn split_failures<T>(items: Vec<T>, mut write: impl FnMut(&[T]) -> BoxFuture<'_, Result<(), HandlerError>>) -> Split<T> {
    let mut out = Split { committed: Vec::new(), poison: Vec::new(), retry: None };
    let mut stack = vec![items];
    while let Some(mut group) = stack.pop() {
        if group.is_empty() {
            continue;
        }
        match write(&group).await {
            Ok(()) => out.committed.append(&mut group),
            Err(e) if !e.is_permanent() => {
                for rest in stack.drain(..).rev() {
                    group.extend(rest);
                }
                out.retry = Some((group, e.message));
                break;
            }
            Err(e) if group.len() == 1 => out.poison.extend(group.into_iter().map(|t| (t, e.message.clone()))),
            Err(_) => {
                let right = group.split_off(group.len() / 2);
                stack.push(right);
                stack.push(group);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn finds_the_poison_and_keeps_the_order() {
        let mut writes: Vec<Vec<u32>> = Vec::new();
        let split = split_failures((0..10).collect(), |g: &[u32]| {
            writes.push(g.to_vec());
            let bad = g.contains(&3) || g.contains(&7);
            Box::pin(async move { if bad { Err(HandlerError::permanent("refused")) } else { Ok(()) } })
        })
        .await;
        assert_eq!(split.poison.iter().map(|p| p.0).collect::<Vec<_>>(), vec![3, 7]);
        assert_eq!(split.committed, vec![0, 1, 2, 4, 5, 6, 8, 9]);
        assert!(split.retry.is_none());
        let order: Vec<u32> = writes.iter().filter(|w| w.len() == 1).map(|w| w[0]).collect();
        assert!(order.windows(2).all(|p| p[0] < p[1]), "{order:?}");

        let split = split_failures((0..4).collect(), |g: &[u32]| {
            let first = g[0];
            Box::pin(async move {
                match first {
                    0 => Err(HandlerError::permanent("x")),
                    _ => Err(HandlerError::transient("down")),
                }
            })
        })
        .await;
        assert!(split.committed.is_empty());
        assert_eq!(split.poison.iter().map(|p| p.0).collect::<Vec<_>>(), vec![0]);
        let (rest, why) = split.retry.expect("transient");
        assert_eq!((rest, why.as_str()), (vec![1, 2, 3], "down"));
    }
}
