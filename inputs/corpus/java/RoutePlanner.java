/*
 * RoutePlanner.java - shortest paths on a weighted road graph with Dijkstra and A*.
 *
 * The graph is read from a small text format, one edge per line:
 *
 *     # comment
 *     node  <name> <x> <y>
 *     road  <from> <to> <length> [oneway]
 *
 * Dijkstra gives exact distances from one source to every node; A* uses straight-line distance
 * as an admissible heuristic (roads are never shorter than the straight line), so it returns the
 * same optimal route while settling fewer nodes. main() builds a grid city, checks both agree on
 * many random queries, and reports how much work A* saved.
 *
 *   javac RoutePlanner.java && java RoutePlanner [map.txt FROM TO]
 */
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Deque;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.PriorityQueue;
import java.util.Random;

public final class RoutePlanner {

    /** Adjacency-list graph with node coordinates for the A* heuristic. */
    static final class Graph {
        final List<String> names = new ArrayList<>();
        final Map<String, Integer> index = new HashMap<>();
        final List<double[]> coords = new ArrayList<>();
        final List<List<int[]>> edges = new ArrayList<>(); // per node: {target, edgeId}
        final List<Double> lengths = new ArrayList<>();

        int addNode(String name, double x, double y) {
            if (index.containsKey(name)) {
                throw new IllegalArgumentException("duplicate node '" + name + "'");
            }
            index.put(name, names.size());
            names.add(name);
            coords.add(new double[] {x, y});
            edges.add(new ArrayList<>());
            return names.size() - 1;
        }

        void addRoad(int from, int to, double length, boolean oneway) {
            if (length < distance(from, to) - 1e-9) {
                throw new IllegalArgumentException(String.format(
                    "road %s-%s is shorter (%.3f) than the straight line (%.3f); A* would be wrong",
                    names.get(from), names.get(to), length, distance(from, to)));
            }
            int id = lengths.size();
            lengths.add(length);
            edges.get(from).add(new int[] {to, id});
            if (!oneway) {
                edges.get(to).add(new int[] {from, id});
            }
        }

        int size() {
            return names.size();
        }

        double distance(int a, int b) {
            double dx = coords.get(a)[0] - coords.get(b)[0];
            double dy = coords.get(a)[1] - coords.get(b)[1];
            return Math.hypot(dx, dy);
        }

        int require(String name, int lineNo) {
            Integer i = index.get(name);
            if (i == null) {
                throw new IllegalArgumentException("line " + lineNo + ": unknown node '" + name + "'");
            }
            return i;
        }

        static Graph parse(List<String> lines) {
            Graph g = new Graph();
            int lineNo = 0;
            for (String raw : lines) {
                lineNo++;
                String line = raw.strip();
                if (line.isEmpty() || line.startsWith("#")) {
                    continue;
                }
                String[] f = line.split("\\s+");
                try {
                    switch (f[0]) {
                        case "node" -> g.addNode(f[1], Double.parseDouble(f[2]), Double.parseDouble(f[3]));
                        case "road" -> g.addRoad(g.require(f[1], lineNo), g.require(f[2], lineNo),
                                Double.parseDouble(f[3]), f.length > 4 && f[4].equals("oneway"));
                        default -> throw new IllegalArgumentException("line " + lineNo + ": unknown record '" + f[0] + "'");
                    }
                } catch (ArrayIndexOutOfBoundsException | NumberFormatException e) {
                    throw new IllegalArgumentException("line " + lineNo + ": malformed record: " + line, e);
                }
            }
            return g;
        }
    }

    /** A route and the number of nodes settled while finding it. */
    record Route(double length, List<Integer> nodes, int settled) {
        boolean found() {
            return !nodes.isEmpty();
        }
    }

    private record QueueItem(int node, double priority) {}

    /**
     * Best-first search. With a zero heuristic this is Dijkstra; with the straight-line distance
     * to the target it is A*. Stale queue entries are skipped instead of decreasing keys.
     */
    static Route search(Graph g, int source, int target, boolean useHeuristic) {
        double[] dist = new double[g.size()];
        int[] parent = new int[g.size()];
        boolean[] done = new boolean[g.size()];
        Arrays.fill(dist, Double.POSITIVE_INFINITY);
        Arrays.fill(parent, -1);
        dist[source] = 0.0;
        PriorityQueue<QueueItem> queue = new PriorityQueue<>((a, b) -> Double.compare(a.priority(), b.priority()));
        queue.add(new QueueItem(source, useHeuristic ? g.distance(source, target) : 0.0));
        int settled = 0;
        while (!queue.isEmpty()) {
            QueueItem item = queue.poll();
            int u = item.node();
            if (done[u]) {
                continue;
            }
            done[u] = true;
            settled++;
            if (u == target) {
                break;
            }
            for (int[] e : g.edges.get(u)) {
                int v = e[0];
                double candidate = dist[u] + g.lengths.get(e[1]);
                if (candidate < dist[v]) {
                    dist[v] = candidate;
                    parent[v] = u;
                    double h = useHeuristic ? g.distance(v, target) : 0.0;
                    queue.add(new QueueItem(v, candidate + h));
                }
            }
        }
        if (!done[target]) {
            return new Route(Double.POSITIVE_INFINITY, List.of(), settled);
        }
        Deque<Integer> path = new ArrayDeque<>();
        for (int v = target; v != -1; v = parent[v]) {
            path.addFirst(v);
        }
        return new Route(dist[target], new ArrayList<>(path), settled);
    }

    /** A w x h grid city with blocks of length 1, some diagonal avenues and a few one-way streets. */
    static Graph gridCity(int w, int h, long seed) {
        Random rng = new Random(seed);
        Graph g = new Graph();
        for (int y = 0; y < h; y++) {
            for (int x = 0; x < w; x++) {
                g.addNode("n" + x + "_" + y, x, y);
            }
        }
        for (int y = 0; y < h; y++) {
            for (int x = 0; x < w; x++) {
                int id = y * w + x;
                // Streets are a little longer than the straight line: curves, traffic lights.
                if (x + 1 < w) {
                    g.addRoad(id, id + 1, 1.0 + 0.5 * rng.nextDouble(), rng.nextInt(10) == 0);
                }
                if (y + 1 < h) {
                    g.addRoad(id, id + w, 1.0 + 0.5 * rng.nextDouble(), rng.nextInt(10) == 0);
                }
                if (x + 1 < w && y + 1 < h && rng.nextInt(6) == 0) {
                    g.addRoad(id, id + w + 1, Math.sqrt(2.0) * (1.0 + 0.2 * rng.nextDouble()), false);
                }
            }
        }
        return g;
    }

    static String describe(Graph g, Route r) {
        if (!r.found()) {
            return "no route";
        }
        StringBuilder sb = new StringBuilder();
        for (int i = 0; i < r.nodes().size(); i++) {
            if (i > 0) {
                sb.append(" -> ");
            }
            sb.append(g.names.get(r.nodes().get(i)));
        }
        return String.format("%.3f via %s", r.length(), sb);
    }

    public static void main(String[] args) throws IOException {
        if (args.length == 3) {
            Graph g = Graph.parse(Files.readAllLines(Path.of(args[0])));
            Route r = search(g, g.require(args[1], 0), g.require(args[2], 0), true);
            System.out.println(describe(g, r));
            return;
        }
        Graph city = gridCity(60, 60, 20240607L);
        Random rng = new Random(1);
        long dijkstraWork = 0;
        long astarWork = 0;
        int queries = 300;
        for (int q = 0; q < queries; q++) {
            int s = rng.nextInt(city.size());
            int t = rng.nextInt(city.size());
            Route exact = search(city, s, t, false);
            Route fast = search(city, s, t, true);
            if (exact.found() != fast.found() || Math.abs(exact.length() - fast.length()) > 1e-9) {
                System.err.printf("mismatch for %s -> %s: %s vs %s%n", city.names.get(s), city.names.get(t),
                        describe(city, exact), describe(city, fast));
                System.exit(1);
            }
            dijkstraWork += exact.settled();
            astarWork += fast.settled();
        }
        System.out.printf("%d queries agree; nodes settled: Dijkstra %d, A* %d (%.1f%% of the work)%n", queries,
                dijkstraWork, astarWork, 100.0 * astarWork / dijkstraWork);

        List<String> tiny = List.of(
            "# a triangle where the direct road is slow",
            "node a 0 0", "node b 1 0", "node c 2 0",
            "road a c 5.0", "road a b 1.0", "road b c 1.5 oneway");
        Graph g = Graph.parse(tiny);
        System.out.println("a -> c: " + describe(g, search(g, 0, 2, true)));
        System.out.println("c -> a: " + describe(g, search(g, 2, 0, true)));
    }
}
