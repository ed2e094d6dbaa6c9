// One failing widget shows its error in its own box; the page around it stays (issue 19, item 1).
import { render, screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { useState } from "react";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { ErrorBoundary } from "./ErrorBoundary";

let failing = true;
function Widget({ label }: { label: string }) {
  if (failing) throw new RangeError("Invalid array length");
  return <p>{label} drawn</p>;
}

describe("ErrorBoundary", () => {
  beforeEach(() => {
    failing = true;
    vi.spyOn(console, "error").mockImplementation(() => {}); // React and the boundary log the caught error
  });
  afterEach(() => vi.restoreAllMocks());

  it("replaces only the failing widget with a box naming it and its message", () => {
    render(
      <main>
        <h1>Run 1</h1>
        <ErrorBoundary name="Per-unit distributions">
          <Widget label="histogram" />
        </ErrorBoundary>
        <ErrorBoundary name="Units">
          <p>unit table</p>
        </ErrorBoundary>
      </main>,
    );
    const box = screen.getByRole("alert");
    expect(box).toHaveTextContent("Per-unit distributions could not be shown");
    expect(box).toHaveTextContent("Invalid array length");
    expect(screen.getByRole("heading", { name: "Run 1" })).toBeInTheDocument();
    expect(screen.getByText("unit table")).toBeInTheDocument();
    expect(console.error).toHaveBeenCalledWith("Per-unit distributions failed to render:", expect.any(RangeError), expect.anything());
  });

  it("“Try again” renders the widget anew once it can", async () => {
    const user = userEvent.setup();
    render(
      <ErrorBoundary name="Chart">
        <Widget label="chart" />
      </ErrorBoundary>,
    );
    expect(screen.getByText("Chart could not be shown")).toBeInTheDocument();
    failing = false;
    await user.click(screen.getByRole("button", { name: "Try again" }));
    expect(screen.getByText("chart drawn")).toBeInTheDocument();
    expect(screen.queryByRole("alert")).toBeNull();
  });

  it("a new resetKey (another layer) clears the error", async () => {
    const user = userEvent.setup();
    function Page() {
      const [layer, setLayer] = useState("relu2");
      return (
        <>
          <button type="button" onClick={() => { failing = false; setLayer("relu3"); }}>relu3</button>
          <ErrorBoundary name="Chart" resetKey={layer}>
            <Widget label={layer} />
          </ErrorBoundary>
        </>
      );
    }
    render(<Page />);
    expect(screen.getByRole("alert")).toHaveTextContent("Chart could not be shown");
    await user.click(screen.getByRole("button", { name: "relu3" }));
    expect(screen.getByText("relu3 drawn")).toBeInTheDocument();
  });

  it("renders its children untouched when nothing fails", () => {
    failing = false;
    render(
      <ErrorBoundary name="Chart">
        <Widget label="chart" />
      </ErrorBoundary>,
    );
    expect(screen.getByText("chart drawn")).toBeInTheDocument();
    expect(screen.queryByTestId("widget-error")).toBeNull();
  });
});
