// The server itself: health (no credentials) and who the token is.
import { queryOptions, useQuery } from "@tanstack/react-query";
import { useToken } from "../auth";
import { client, unwrap } from "../client";

export const serverQueries = {
  health: () =>
    queryOptions({ queryKey: ["health"], queryFn: () => unwrap(client.GET("/api/v1/health")), staleTime: 30_000, retry: 1 }),
  me: (token: string | null) =>
    queryOptions({
      queryKey: ["me", token],
      queryFn: () => unwrap(client.GET("/api/v1/me")),
      enabled: !!token,
      retry: false,
      staleTime: 60_000,
    }),
};

export const useHealth = () => useQuery(serverQueries.health());
export const useMe = () => useQuery(serverQueries.me(useToken()));
