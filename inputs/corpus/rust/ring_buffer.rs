//! ring_buffer.rs - a fixed-capacity circular buffer with overwrite-on-full semantics, plus a
//! moving-average helper built on it.
//!
//! The buffer keeps `head` (index of the oldest element) and `len`; the slot for the next push is
//! `(head + len) % capacity`. Storage is `Vec<Option<T>>` so the code needs no `unsafe` and drops
//! elements correctly. Typical uses: the last N log lines, a sliding window of sensor samples, or
//! an undo history that forgets the oldest step.
//!
//!   rustc --edition 2021 --test ring_buffer.rs -o ring_buffer_tests && ./ring_buffer_tests

use std::fmt::Debug;

#[derive(Debug, Clone)]
pub struct RingBuffer<T> {
    slots: Vec<Option<T>>,
    head: usize,
    len: usize,
}

impl<T> RingBuffer<T> {
    /// Creates an empty buffer. Panics when `capacity` is zero: such a buffer could hold nothing.
    pub fn with_capacity(capacity: usize) -> Self {
        assert!(capacity > 0, "RingBuffer capacity must be positive");
        let mut slots = Vec::with_capacity(capacity);
        slots.resize_with(capacity, || None);
        RingBuffer { slots, head: 0, len: 0 }
    }

    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn is_full(&self) -> bool {
        self.len == self.capacity()
    }

    /// Appends `value`; when full, the oldest element is dropped and returned.
    pub fn push(&mut self, value: T) -> Option<T> {
        let cap = self.capacity();
        if self.is_full() {
            let evicted = self.slots[self.head].replace(value);
            self.head = (self.head + 1) % cap;
            evicted
        } else {
            let tail = (self.head + self.len) % cap;
            self.slots[tail] = Some(value);
            self.len += 1;
            None
        }
    }

    /// Removes and returns the oldest element.
    pub fn pop_front(&mut self) -> Option<T> {
        if self.is_empty() {
            return None;
        }
        let value = self.slots[self.head].take();
        self.head = (self.head + 1) % self.capacity();
        self.len -= 1;
        value
    }

    /// Removes and returns the newest element.
    pub fn pop_back(&mut self) -> Option<T> {
        if self.is_empty() {
            return None;
        }
        let tail = (self.head + self.len - 1) % self.capacity();
        self.len -= 1;
        self.slots[tail].take()
    }

    /// The i-th element counting from the oldest (0) to the newest (len - 1).
    pub fn get(&self, i: usize) -> Option<&T> {
        if i >= self.len {
            return None;
        }
        self.slots[(self.head + i) % self.capacity()].as_ref()
    }

    pub fn front(&self) -> Option<&T> {
        self.get(0)
    }

    pub fn back(&self) -> Option<&T> {
        if self.len == 0 { None } else { self.get(self.len - 1) }
    }

    pub fn clear(&mut self) {
        while self.pop_front().is_some() {}
        self.head = 0;
    }

    pub fn iter(&self) -> Iter<'_, T> {
        Iter { buffer: self, index: 0 }
    }
}

pub struct Iter<'a, T> {
    buffer: &'a RingBuffer<T>,
    index: usize,
}

impl<'a, T> Iterator for Iter<'a, T> {
    type Item = &'a T;

    fn next(&mut self) -> Option<&'a T> {
        let item = self.buffer.get(self.index);
        if item.is_some() {
            self.index += 1;
        }
        item
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let remaining = self.buffer.len() - self.index;
        (remaining, Some(remaining))
    }
}

impl<T: Clone> RingBuffer<T> {
    /// Copies the contents, oldest first, into a Vec.
    pub fn to_vec(&self) -> Vec<T> {
        self.iter().cloned().collect()
    }
}

impl<T> Extend<T> for RingBuffer<T> {
    fn extend<I: IntoIterator<Item = T>>(&mut self, iter: I) {
        for value in iter {
            self.push(value);
        }
    }
}

/// Mean of the last `window` samples, updated in O(1) per sample with a running sum.
/// The sum is recomputed from scratch every `window` pushes so floating-point drift stays bounded.
pub struct MovingAverage {
    samples: RingBuffer<f64>,
    sum: f64,
    pushes_since_resum: usize,
}

impl MovingAverage {
    pub fn new(window: usize) -> Self {
        MovingAverage { samples: RingBuffer::with_capacity(window), sum: 0.0, pushes_since_resum: 0 }
    }

    pub fn add(&mut self, x: f64) -> f64 {
        if let Some(old) = self.samples.push(x) {
            self.sum -= old;
        }
        self.sum += x;
        self.pushes_since_resum += 1;
        if self.pushes_since_resum >= self.samples.capacity() {
            self.sum = self.samples.iter().sum();
            self.pushes_since_resum = 0;
        }
        self.mean()
    }

    pub fn mean(&self) -> f64 {
        if self.samples.is_empty() { 0.0 } else { self.sum / self.samples.len() as f64 }
    }
}

fn describe<T: Debug>(buffer: &RingBuffer<T>) -> String {
    let items: Vec<String> = buffer.iter().map(|x| format!("{:?}", x)).collect();
    format!("[{}] ({}/{})", items.join(", "), buffer.len(), buffer.capacity())
}

#[allow(dead_code)]
fn main() {
    let mut history = RingBuffer::with_capacity(3);
    for command in ["open", "edit", "save", "close"] {
        if let Some(forgotten) = history.push(command) {
            println!("forgot {:?}", forgotten);
        }
    }
    println!("history: {}", describe(&history));
    let mut avg = MovingAverage::new(4);
    for x in [1.0, 2.0, 3.0, 4.0, 5.0, 6.0] {
        println!("sample {:>4} -> mean {:.2}", x, avg.add(x));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    #[test]
    fn push_pop_in_fifo_order() {
        let mut rb = RingBuffer::with_capacity(3);
        assert!(rb.is_empty());
        rb.push(1);
        rb.push(2);
        assert_eq!(rb.pop_front(), Some(1));
        rb.push(3);
        rb.push(4);
        assert!(rb.is_full());
        assert_eq!(rb.to_vec(), vec![2, 3, 4]);
        assert_eq!(rb.pop_back(), Some(4));
        assert_eq!(rb.to_vec(), vec![2, 3]);
    }

    #[test]
    fn overwrites_oldest_when_full() {
        let mut rb = RingBuffer::with_capacity(2);
        assert_eq!(rb.push('a'), None);
        assert_eq!(rb.push('b'), None);
        assert_eq!(rb.push('c'), Some('a'));
        assert_eq!(rb.front(), Some(&'b'));
        assert_eq!(rb.back(), Some(&'c'));
        assert_eq!(rb.get(2), None);
    }

    #[test]
    fn wraps_many_times() {
        let mut rb = RingBuffer::with_capacity(5);
        rb.extend(0..1003);
        assert_eq!(rb.to_vec(), vec![998, 999, 1000, 1001, 1002]);
        assert_eq!(rb.iter().size_hint(), (5, Some(5)));
    }

    #[test]
    fn drops_elements_exactly_once() {
        let marker = Rc::new(());
        {
            let mut rb = RingBuffer::with_capacity(4);
            for _ in 0..10 {
                rb.push(Rc::clone(&marker));
            }
            assert_eq!(Rc::strong_count(&marker), 5); // 4 in the buffer + the original
            rb.pop_front();
            assert_eq!(Rc::strong_count(&marker), 4);
            rb.clear();
            assert_eq!(Rc::strong_count(&marker), 1);
            rb.push(Rc::clone(&marker));
        }
        assert_eq!(Rc::strong_count(&marker), 1);
    }

    #[test]
    fn moving_average_window() {
        let mut avg = MovingAverage::new(3);
        assert_eq!(avg.add(3.0), 3.0);
        assert_eq!(avg.add(6.0), 4.5);
        assert_eq!(avg.add(9.0), 6.0);
        assert_eq!(avg.add(12.0), 9.0); // window is now 6, 9, 12
        for _ in 0..10_000 {
            avg.add(0.1);
        }
        assert!((avg.mean() - 0.1).abs() < 1e-12);
    }

    #[test]
    #[should_panic(expected = "capacity must be positive")]
    fn zero_capacity_panics() {
        let _rb: RingBuffer<u8> = RingBuffer::with_capacity(0);
    }
}
