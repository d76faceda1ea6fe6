import com.pixelmed.validate.DicomSRValidator;

/** Runs PixelMed's DicomSRValidator on several files in one JVM (test helper). */
public class ValidateMany {
    public static void main(String[] args) throws Exception {
        DicomSRValidator validator = new DicomSRValidator();
        for (String path : args) {
            System.out.println("=== " + path);
            System.out.println(validator.validate(path));
        }
    }
}
