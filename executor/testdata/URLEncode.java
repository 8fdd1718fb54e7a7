// URLEncode prints, for each string of the JSON array of strings on stdin,
// a JSON array holding URLEncoder.encode(s, UTF_8). Run by
// TestEncodersMatchOtherLanguages with `java URLEncode.java` (JDK 11+).
// The input holds no JSON escape but \t, \n, \" and \\.

import java.io.IOException;
import java.net.URLEncoder;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;

public class URLEncode {
    public static void main(String[] args) throws IOException {
        String in = new String(System.in.readAllBytes(), StandardCharsets.UTF_8);
        for (String s : parse(in)) {
            System.out.println("[" + quote(URLEncoder.encode(s, StandardCharsets.UTF_8)) + "]");
        }
    }

    // parse reads a JSON array of strings.
    static List<String> parse(String in) {
        List<String> out = new ArrayList<>();
        StringBuilder cur = null;
        for (int i = 0; i < in.length(); i++) {
            char c = in.charAt(i);
            if (cur == null) {
                if (c == '"') cur = new StringBuilder();
                continue;
            }
            if (c == '"') {
                out.add(cur.toString());
                cur = null;
            } else if (c == '\\') {
                char e = in.charAt(++i);
                switch (e) {
                    case 'n': cur.append('\n'); break;
                    case 't': cur.append('\t'); break;
                    case 'u': cur.append((char) Integer.parseInt(in.substring(i + 1, i + 5), 16)); i += 4; break;
                    default: cur.append(e);
                }
            } else {
                cur.append(c);
            }
        }
        return out;
    }

    // quote writes s as a JSON string (URLEncoder output is printable ASCII).
    static String quote(String s) {
        return "\"" + s.replace("\\", "\\\\").replace("\"", "\\\"") + "\"";
    }
}
